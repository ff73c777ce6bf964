"""goto-tw: a URL shortener daemon on Twisted, after goto from *The Way to Go*, chapter 19."""

__version__ = "0.1.0"
