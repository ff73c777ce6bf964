"""The ``twistd goto`` plugin: one line pointing at :mod:`goto_tw.tap`."""

from twisted.application.service import ServiceMaker

goto = ServiceMaker("goto", "goto_tw.tap", "goto: a URL shortener (master, or slave with --master)", "goto")
