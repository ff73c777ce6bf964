"""XML-RPC: the master's ``/RPC2`` resource, and the slave's RemoteStore talking to it (no sockets)."""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any, cast
from xml.parsers import expat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web import xmlrpc
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from goto_tw.errors import InvalidURL, KeyNotFound, MasterRefused, MasterUnreachable, StoreUnavailable
from goto_tw.interfaces import IDatabaseHealth, IURLStore
from goto_tw.keys import HEALTH_PROBE_KEY
from goto_tw.remote import GATHER_PAUSE, HTTPPoster, RemoteStore, master_rpc_url
from goto_tw.rpc import RPCResource
from goto_tw.store import URLStore
from tests.conftest import LogCapture
from tests.fakes import ManualLog
from tests.helpers import failure_of, has_fired, result_of

RPC_URL = "http://master.test:8081/RPC2"


def rpc_site(store: URLStore, secret: bytes | None = None) -> Resource:
    root = Resource()
    root.putChild(b"RPC2", RPCResource(store, secret))
    return root


class Master:
    """A master's RPC resource behind StubTreq, and a RemoteStore pointed at it."""

    def __init__(
        self, store: URLStore, secret: bytes | None = None, client_secret: bytes | None = None
    ) -> None:
        self.stub: Any = StubTreq(rpc_site(store, secret))  # its methods are generated, so untyped
        self.clock = Clock()
        self.remote = RemoteStore(
            cast(HTTPPoster, self.stub), RPC_URL, self.clock, timeout=5.0, secret=client_secret
        )

    def settle(self, deferred: Deferred[Any]) -> Deferred[Any]:
        """Let queued calls go out (once a gather pause has passed) and the stub answer them."""
        self.clock.advance(GATHER_PAUSE)
        for _ in range(3):
            self.stub.flush()
        return deferred

    def raw_call(self, body: bytes, headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, bytes]:
        response = self.settle(self.stub.post(RPC_URL, data=body, headers=headers or {}))
        answered = result_of(response)
        return answered.code, result_of(self.settle(answered.content()))


def test_put_then_get_over_rpc() -> None:
    """Store.Put answers the key; Store.Get answers the URL: the store round-trips over XML-RPC."""
    store = URLStore()
    master = Master(store)
    key = result_of(master.settle(master.remote.put("http://example.com/a")))
    assert key == "0"
    assert result_of(master.settle(master.remote.get(key))) == "http://example.com/a"


@pytest.mark.parametrize(
    ("method", "argument", "error"),
    [("get", "nope", KeyNotFound), ("put", "ftp://x/", InvalidURL)],
)
def test_store_errors_cross_the_wire_as_the_same_errors(
    method: str, argument: str, error: type[Exception]
) -> None:
    """Faults carry stable codes that the client maps back to the store's own errors."""
    master = Master(URLStore())
    call = getattr(master.remote, method)(argument)
    assert failure_of(master.settle(call)).check(error)


def test_fault_codes_are_stable_and_documented() -> None:
    """A plain XML-RPC client sees fault 404 for an unknown key and 400 for a bad URL."""
    master = Master(URLStore())
    status, body = master.raw_call(xmlrpclib.dumps(("nope",), "Store.Get").encode())
    assert status == 200
    with pytest.raises(xmlrpclib.Fault) as raised:
        xmlrpclib.loads(body)
    assert raised.value.faultCode == 404
    _, body = master.raw_call(xmlrpclib.dumps(("ftp://x/",), "Store.Put").encode())
    with pytest.raises(xmlrpclib.Fault) as raised:
        xmlrpclib.loads(body)
    assert raised.value.faultCode == 400
    assert "http" in raised.value.faultString


@pytest.mark.parametrize(
    "body",
    [
        xmlrpclib.dumps((), "Store.Get").encode(),
        xmlrpclib.dumps((1,), "Store.Get").encode(),
        xmlrpclib.dumps(("a", "b"), "Store.Put").encode(),
        xmlrpclib.dumps((["x"],), "Store.Put").encode(),
    ],
)
def test_wrong_arguments_are_fault_400(body: bytes) -> None:
    """Wrong argument counts or types are a client error with a clear fault, not a traceback."""
    _, answer = Master(URLStore()).raw_call(body)
    with pytest.raises(xmlrpclib.Fault) as raised:
        xmlrpclib.loads(answer)
    assert raised.value.faultCode == 400


def test_unknown_method_and_garbage_are_faults() -> None:
    """An unknown method or a body that is not XML-RPC answers a fault, and the master keeps serving."""
    master = Master(URLStore())
    for body in (xmlrpclib.dumps((), "Store.Delete").encode(), b"<not xml", b"\xff\xfe"):
        status, answer = master.raw_call(body)
        assert status == 200
        with pytest.raises(xmlrpclib.Fault):
            xmlrpclib.loads(answer)
    assert result_of(master.settle(master.remote.put("http://ok/"))) == "0"


def test_disk_failure_on_the_master_is_store_unavailable_on_the_slave() -> None:
    """The master's 503 (its disk failed) reaches the slave as StoreUnavailable, not as unreachable."""
    log = ManualLog()
    master = Master(URLStore(log=log))
    call = master.remote.put("http://a/")
    master.settle(call)
    log.fail_all()
    failure = failure_of(master.settle(call))
    assert failure.check(StoreUnavailable)
    assert not failure.check(MasterUnreachable)


def test_secret_is_required_when_configured() -> None:
    """Without the secret, or with a wrong one, the master refuses and stores nothing; for the slave
    this is a 503 (its own deployment mistake, not the user's), never a 4xx."""
    store = URLStore()
    for client_secret in (None, b"wrong"):
        master = Master(store, secret=b"s3cret", client_secret=client_secret)
        failure = failure_of(master.settle(master.remote.put("http://a/")))
        assert failure.check(MasterRefused)
        assert isinstance(failure.value, StoreUnavailable)
    assert store.count() == 0
    master = Master(store, secret=b"s3cret", client_secret=b"s3cret")
    assert result_of(master.settle(master.remote.put("http://a/"))) == "0"


def test_unauthorized_calls_are_not_even_parsed() -> None:
    """The secret is checked before the body is parsed: garbage without it gets the 401 fault."""
    master = Master(URLStore(), secret=b"s3cret")
    _, answer = master.raw_call(b"<garbage")
    with pytest.raises(xmlrpclib.Fault) as raised:
        xmlrpclib.loads(answer)
    assert raised.value.faultCode == 401


class Silent(Resource):
    """A master that accepts the request and never answers."""

    isLeaf = True

    def render_POST(self, request: Any) -> object:
        return NOT_DONE_YET


def test_a_master_that_does_not_answer_times_out() -> None:
    """No answer within the timeout is MasterUnreachable (a 503), never a hang."""
    clock = Clock()
    stub: Any = StubTreq(Silent())
    remote = RemoteStore(stub, RPC_URL, clock, timeout=2.0)
    call = remote.get("abc")
    clock.advance(0)
    stub.flush()
    clock.advance(1.9)
    assert not has_fired(call)
    clock.advance(0.2)
    assert failure_of(call).check(MasterUnreachable)


def test_a_non_xmlrpc_answer_is_unreachable() -> None:
    """Something that is not our master on that port (an HTML 404 page) is a 503, not a crash."""
    stub: Any = StubTreq(Resource())
    clock = Clock()
    remote = RemoteStore(stub, RPC_URL, clock, timeout=2.0)
    call = remote.get("abc")
    clock.advance(0)
    stub.flush()
    assert failure_of(call).check(StoreUnavailable)


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8081", "http://127.0.0.1:8081/RPC2"),
        ("http://m.example:81/RPC2", "http://m.example:81/RPC2"),
        ("https://m.example/goto/RPC2", "https://m.example/goto/RPC2"),
    ],
)
def test_master_option_forms(given: str, url: str) -> None:
    """--master takes HOST:PORT or a full RPC URL."""
    assert master_rpc_url(given) == url


class Counting(Resource):
    """Counts the HTTP requests that reach the wrapped RPC resource."""

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.requests = 0

    def getChild(self, path: bytes, request: Any) -> Resource:
        self.requests += 1
        return self.inner.children[path]  # type: ignore[no-any-return]


def test_calls_in_one_turn_travel_as_one_multicall() -> None:
    """Many puts and gets made together cost one HTTP request; each gets its own answer or error."""
    store = URLStore({"0": "http://known/"})
    counting = Counting(rpc_site(store))
    stub: Any = StubTreq(counting)
    clock = Clock()
    remote = RemoteStore(cast(HTTPPoster, stub), RPC_URL, clock, timeout=5.0)
    calls = [remote.put(f"http://u/{i}") for i in range(5)] + [
        remote.get("0"),
        remote.get("nope"),
        remote.put("bad"),
    ]
    clock.advance(0)
    for _ in range(3):
        stub.flush()
    assert counting.requests == 1
    assert [result_of(call) for call in calls[:6]] == ["1", "2", "3", "4", "5", "http://known/"]
    assert failure_of(calls[6]).check(KeyNotFound)
    assert failure_of(calls[7]).check(InvalidURL)


def test_a_failed_batch_fails_each_call() -> None:
    """If the batch's request gets no answer, every call in it is MasterUnreachable."""
    clock = Clock()
    stub: Any = StubTreq(Silent())
    remote = RemoteStore(cast(HTTPPoster, stub), RPC_URL, clock, timeout=1.0)
    calls = [remote.get("a"), remote.put("http://b/")]
    clock.advance(0)
    stub.flush()
    clock.advance(1.1)
    assert all(failure_of(call).check(MasterUnreachable) for call in calls)


def multicall(master: Master, calls: Any) -> Any:
    status, body = master.raw_call(xmlrpclib.dumps((calls,), "system.multicall").encode())
    assert status == 200
    return xmlrpclib.loads(body)[0][0]


def test_multicall_reports_each_call_on_its_own() -> None:
    """Bad items in a multicall get fault structs; the good ones still run."""
    master = Master(URLStore())
    answers = multicall(
        master,
        [
            {"methodName": "Store.Put", "params": ["http://a/"]},
            {"methodName": "system.multicall", "params": [[]]},
            {"methodName": "Store.Nope", "params": []},
            {"params": []},
            "not a call",
            {"methodName": "Store.Get", "params": ["0"]},
        ],
    )
    assert answers[0] == ["0"]
    assert all(isinstance(answer, dict) and "faultCode" in answer for answer in answers[1:5])
    assert answers[5] == ["http://a/"]


def test_keys_the_master_has_no_link_under_are_refused_at_once_in_a_multicall() -> None:
    """A master whose store holds every link answers ``Store.Get`` of an unknown or disabled key
    with the fault ``get`` would fail with, returned at once (no Deferred, no failure); each call of
    a multicall gets its own fault struct."""
    store = URLStore({"0": "http://a.example/", "gone": "http://g.example/"}, disabled={"gone": 1})
    handler = RPCResource(store).getSubHandler("Store")
    for key, code in (("nope", 404), ("gone", 410)):
        refused = handler.xmlrpc_Get(key)
        assert isinstance(refused, xmlrpc.Fault)
        expected = failure_of(store.get(key)).value
        assert (refused.faultCode, refused.faultString) == (code, str(expected))
    answers = multicall(
        Master(store),
        [{"methodName": "Store.Get", "params": [key]} for key in ("nope", "0", "gone")],
    )
    assert answers == [
        {"faultCode": 404, "faultString": "no link is stored under 'nope'"},
        ["http://a.example/"],
        {"faultCode": 410, "faultString": "This link has been disabled."},
    ]


@implementer(IURLStore)
class AskedStore:
    """A store that must be asked (``get`` only, as a PostgreSQL master's): it knows no key."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, key: str) -> Deferred[str]:
        self.asked.append(key)
        return fail(KeyNotFound("not in the database"))

    def put(self, url: str) -> Deferred[str]:
        raise NotImplementedError

    def count(self) -> int:
        return 0


def test_a_store_that_does_not_know_at_once_is_asked() -> None:
    """``Store.Get`` on a store without :class:`~goto_tw.interfaces.IKnownKeys` asks ``get``, and
    the error it fails with is the fault."""
    store = AskedStore()
    handler = RPCResource(store).getSubHandler("Store")
    fault = failure_of(handler.xmlrpc_Get("nope")).value
    assert store.asked == ["nope"]
    assert isinstance(fault, xmlrpc.Fault)
    assert (fault.faultCode, fault.faultString) == (404, "not in the database")


def test_multicall_is_bounded() -> None:
    """A multicall of more than 1000 calls is refused whole with fault 400."""
    master = Master(URLStore())
    _, body = master.raw_call(
        xmlrpclib.dumps(([{"methodName": "Store.Get", "params": ["0"]}] * 1001,), "system.multicall").encode()
    )
    with pytest.raises(xmlrpclib.Fault) as raised:
        xmlrpclib.loads(body)
    assert raised.value.faultCode == 400


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<methodCall><methodName>Store.Put</methodName><params><param><value><string>&lol9;</string></value></param></params></methodCall>"""


class ParserSpy:
    """Records every expat parser made and which of its handlers ran (issue 9 item 24: a test of the
    parser's refusal must show the parser was reached, and that it did no expansion work)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsers: list[SpiedParser] = []
        self.watching = True
        create = expat.ParserCreate

        def spied(*args: Any) -> Any:
            if not self.watching:  # the test's own parsing of the answer
                return create(*args)
            parser = SpiedParser(create(*args))
            self.parsers.append(parser)
            return parser

        monkeypatch.setattr(expat, "ParserCreate", spied)


class SpiedParser:
    """An expat parser whose handlers count their calls."""

    def __init__(self, parser: Any) -> None:
        object.__setattr__(self, "_parser", parser)
        object.__setattr__(self, "calls", {})

    def __setattr__(self, name: str, handler: Any) -> None:
        calls: dict[str, int] = self.calls

        def counted(*args: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return handler(*args)

        setattr(self._parser, name, counted if name.endswith("Handler") and callable(handler) else handler)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def refusal(master: Master, body: bytes, spy: ParserSpy) -> xmlrpclib.Fault:
    status, answer = master.raw_call(body)
    assert status == 200
    spy.watching = False
    with pytest.raises(xmlrpclib.Fault) as raised:
        xmlrpclib.loads(answer)
    return raised.value


def test_a_billion_laughs_is_refused_by_the_parser_at_its_doctype(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bomb reaches the parser (no byte filter in front), which stops at the DOCTYPE: no entity is
    declared, no character data delivered, nothing stored; fault 400."""
    spy = ParserSpy(monkeypatch)
    store = URLStore()
    fault = refusal(Master(store), BILLION_LAUGHS, spy)
    assert fault.faultCode == 400 and "DOCTYPE" in fault.faultString
    [parser] = spy.parsers
    assert parser.calls == {"StartDoctypeDeclHandler": 1}
    assert store.count() == 0


def test_a_billion_laughs_in_utf_16_is_refused_before_any_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bomb in UTF-16 (expat would follow its byte-order mark) is refused as not UTF-8,
    with fault 400, before a parser exists: the refusal costs one decode check."""
    spy = ParserSpy(monkeypatch)
    body = (
        BILLION_LAUGHS.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    )
    fault = refusal(Master(URLStore()), body, spy)
    assert fault.faultCode == 400 and "UTF-8" in fault.faultString
    assert spy.parsers == []


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>Store.Put</methodName><params><param><value>&e;</value></param>"
        b"</params></methodCall>",
        b'<!DOCTYPE methodCall SYSTEM "http://127.0.0.1:9/x.dtd"><methodCall><methodName>Store.Get'
        b"</methodName></methodCall>",
    ],
    ids=["external-entity", "external-dtd"],
)
def test_external_entities_are_refused_by_the_parser(monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    """An external entity or DTD reaches the parser and is refused at its DOCTYPE, before anything is
    declared, fetched or stored; fault 400."""
    spy = ParserSpy(monkeypatch)
    store = URLStore()
    fault = refusal(Master(store), body, spy)
    assert fault.faultCode == 400
    [parser] = spy.parsers
    assert parser.calls == {"StartDoctypeDeclHandler": 1}
    assert store.count() == 0


def test_a_body_in_another_encoding_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Latin-1 body is refused (fault 400) whatever its XML declaration says, before parsing."""
    spy = ParserSpy(monkeypatch)
    body = (
        b'<?xml version="1.0" encoding="ISO-8859-1"?><methodCall><methodName>Store.Put</methodName>'
        b"<params><param><value>http://a/\xe9</value></param></params></methodCall>"
    )
    store = URLStore()
    fault = refusal(Master(store), body, spy)
    assert fault.faultCode == 400 and "UTF-8" in fault.faultString
    assert spy.parsers == [] and store.count() == 0


class TwistedsOwn(RPCResource):
    """The same resource, parsing as twisted.web does: the reference for good input."""

    render_POST = xmlrpc.XMLRPC.render_POST


def test_answers_to_good_input_are_twisted_webs_byte_for_byte() -> None:
    """Parsing through the hardened parser changes nothing for good input (or plain bad XML)."""
    bodies = [
        xmlrpclib.dumps(("http://example.com/ä?q=1&r=<x>",), "Store.Put").encode("utf-8"),
        xmlrpclib.dumps(("0",), "Store.Get").encode(),
        xmlrpclib.dumps(("nope",), "Store.Get").encode(),
        xmlrpclib.dumps(("ftp://x/",), "Store.Put").encode(),
        xmlrpclib.dumps(([{"methodName": "Store.Get", "params": ["0"]}, "x"],), "system.multicall").encode(),
        xmlrpclib.dumps((), "Store.Nope").encode(),
        b"\xef\xbb\xbf" + xmlrpclib.dumps(("1",), "Store.Get").encode(),
        b"<not xml",
        b"<methodCall><methodName>Store.Get</methodName><params><param><value><int>x</int></value>"
        b"</param></params></methodCall>",
    ]
    answers = []
    for resource in (RPCResource(URLStore()), TwistedsOwn(URLStore())):
        root = Resource()
        root.putChild(b"RPC2", resource)
        stub: Any = StubTreq(root)
        seen = []
        for body in bodies:
            response = result_of(stub.post(RPC_URL, data=body))
            seen.append(
                (response.code, response.headers.getRawHeaders("content-type"), result_of(response.content()))
            )
        answers.append(seen)
    assert answers[0] == answers[1]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_rpc_answers_only_post(method: str) -> None:
    """/RPC2 takes POST only; anything else is a plain 405 with Allow: POST (never a 500)."""
    master = Master(URLStore())
    response = result_of(master.settle(master.stub.request(method, RPC_URL)))
    assert response.code == 405
    assert response.headers.getRawHeaders("allow") == ["POST"]


def test_a_body_without_a_method_name_is_a_fault() -> None:
    """A methodResponse sent as a call (no method name) is a fault, not a 500."""
    _, answer = Master(URLStore()).raw_call(
        b"<methodResponse><params><param><value>x</value></param></params></methodResponse>"
    )
    with pytest.raises(xmlrpclib.Fault):
        xmlrpclib.loads(answer)


def test_a_huge_key_is_answered_at_once() -> None:
    """A megabyte-long key is unknown at once (key decoding is quadratic: it must not be tried)."""
    store = URLStore({"0": "http://a/"})
    master = Master(store)
    failure = failure_of(master.settle(master.remote.get("7" * 1_000_000)))
    assert failure.check(KeyNotFound)
    assert store.lookup("7" * 1_000_000) is None


@implementer(IURLStore)
class PutOnlyStore:
    """A store that hands out keys but takes no custom ones (as the PostgreSQL store, for now)."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}

    def get(self, key: str) -> Deferred[str]:
        return succeed(self.urls[key])

    def put(self, url: str) -> Deferred[str]:
        key = str(len(self.urls))
        self.urls[key] = url
        return succeed(key)

    def count(self) -> int:
        return len(self.urls)


def test_store_add_without_a_key_works_on_a_store_without_custom_keys() -> None:
    """A slave adds through ``Store.Add(url, "")``: a master whose store takes no custom keys still
    stores the URL (answered as new); a custom key there is a 400 fault."""
    master = Master(PutOnlyStore())  # type: ignore[arg-type]
    assert result_of(master.settle(master.remote.add("http://example.com/a"))) == ("0", True)
    failure = failure_of(master.settle(master.remote.add("http://example.com/b", "mine")))
    assert "takes no custom keys" in str(failure.value)


class ReferenceSystem(xmlrpc.XMLRPC):
    """``system.multicall`` as it was before the master's fast path: ``maybeDeferred`` per call and
    ``gatherResults`` (the reference the fast path must answer byte for byte like)."""

    def __init__(self, parent: xmlrpc.XMLRPC) -> None:
        super().__init__(allowNone=False)
        self._parent = parent

    def xmlrpc_multicall(self, *args: Any) -> Any:
        from twisted.internet.defer import gatherResults, maybeDeferred

        from goto_tw.rpc import BAD_ARGUMENTS, MAX_MULTICALL, _failure_struct, _fault_struct

        if len(args) != 1 or not isinstance(args[0], list):
            raise xmlrpc.Fault(BAD_ARGUMENTS, "expected one array of calls")
        if len(args[0]) > MAX_MULTICALL:
            raise xmlrpc.Fault(BAD_ARGUMENTS, f"at most {MAX_MULTICALL} calls in one multicall")

        def one(call: Any) -> Deferred[Any]:
            try:
                if not isinstance(call, dict) or not isinstance(call.get("params"), list):
                    raise xmlrpc.Fault(BAD_ARGUMENTS, "each call needs a methodName and a params array")
                name = call.get("methodName")
                if not isinstance(name, str) or name.startswith("system."):
                    raise xmlrpc.Fault(BAD_ARGUMENTS, "not a method that can be batched")
                method = xmlrpc.XMLRPC.lookupProcedure(self._parent, name)
            except xmlrpc.Fault as fault:
                return succeed(_fault_struct(fault))
            answered: Deferred[Any] = maybeDeferred(method, *call["params"])
            return answered.addCallbacks(lambda value: [value], _failure_struct)

        return gatherResults([one(call) for call in args[0]])


class Reference(RPCResource):
    """The master as twisted.web's stock XMLRPC would run it: its render_POST and _cbRender (the
    library's marshaller), the reference multicall, and Store.Get always through ``get``."""

    render_POST = xmlrpc.XMLRPC.render_POST
    _cbRender = xmlrpc.XMLRPC._cbRender
    lookupProcedure = xmlrpc.XMLRPC.lookupProcedure

    def __init__(self, store: URLStore) -> None:
        super().__init__(store)
        store_handler = self.getSubHandler("Store")
        store_handler._local = store_handler._known = None
        self.putSubHandler("system", ReferenceSystem(self))


_rpc_keys = st.sampled_from(["0", "1", "2", "gone", "nope", "add", "", "ü", "a" * 70])
_rpc_calls: st.SearchStrategy[tuple[str, list[Any]]] = st.one_of(
    st.tuples(st.just("Store.Get"), st.lists(_rpc_keys, min_size=1, max_size=1)),
    st.tuples(st.just("Store.Get"), st.lists(st.one_of(_rpc_keys, st.integers(0, 9)), max_size=2)),
    st.tuples(
        st.just("Store.Put"),
        st.lists(
            st.sampled_from(["http://a.example/", "ftp://x/", "http://b.example/&<>"]), min_size=1, max_size=1
        ),
    ),
    st.tuples(st.sampled_from(["Store.Nope", "system.multicall", "Nope"]), st.just([])),
)


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(_rpc_calls, max_size=12), single=st.booleans())
def test_the_masters_answers_are_the_stock_xmlrpc_answers(
    calls: list[tuple[str, list[Any]]], single: bool
) -> None:
    """Random calls and multicalls (held, unknown, disabled and invalid keys, refused URLs, bad
    methods and arguments): the master's fast paths answer exactly the bytes twisted.web's stock
    XMLRPC answers, with the library's marshaller and a Deferred per call."""
    answers = []
    for make in (RPCResource, Reference):
        store = URLStore(
            {"0": "http://zero.example/", "1": "http://one.example/?a=1&b=<2>", "gone": "http://g.example/"},
            disabled={"gone": 1},
        )
        root = Resource()
        root.putChild(b"RPC2", make(store))
        stub: Any = StubTreq(root)
        if single and calls:
            body = xmlrpclib.dumps(tuple(calls[0][1]), calls[0][0]).encode("utf-8")
        else:
            batch = [{"methodName": name, "params": params} for name, params in calls]
            body = xmlrpclib.dumps((batch,), "system.multicall").encode("utf-8")
        response = result_of(stub.post(RPC_URL, data=body))
        answers.append((response.code, result_of(response.content())))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("code", [404, 8001, 999, 10**50])
def test_a_masters_long_fault_text_is_cut_for_the_log(code: int) -> None:
    """A fault's text reaches the log (an error's detail) cut to a bound, however long the master
    made it (review 33: a 1 MB text made a 1 MB log line); the user never sees it."""
    from goto_tw.remote import _MAX_FAULT_TEXT, _fault_error

    error = _fault_error(code, "x" * 1_000_000)
    detail = getattr(error, "detail", "")
    assert "xxx" in detail and len(detail) < _MAX_FAULT_TEXT + 100
    assert "xxx" not in str(error)


@implementer(IDatabaseHealth)
class DatabaseStore(URLStore):
    """A master's store with a database behind it (as PostgreSQL's), up or down as the test says."""

    database_reachable = True

    def check_database(self) -> Deferred[bool]:
        # Review 35's second read: a probe that asked the database waited out its deadline while it
        # was down (past the slave's --rpc-timeout), and counted the whole table for every check.
        raise AssertionError("a health probe must not make a database call")


def test_a_slaves_health_probe_is_told_when_the_masters_database_is_down() -> None:
    """Review 35: a slave's health probe (a look-up of the reserved HEALTH_PROBE_KEY) was refused as
    an invalid key before the store was asked, so a slave said "ok" while its master's database was
    down and every add and miss through it was a 503. A master with a database answers the probe
    with a 503 while it knows the database down, alone or in a multicall, without a database call of
    its own; "unknown key" otherwise."""
    store = DatabaseStore()
    master = Master(store)
    assert failure_of(master.settle(master.remote.get(HEALTH_PROBE_KEY))).check(KeyNotFound)
    store.database_reachable = False
    alone = failure_of(master.settle(master.remote.get(HEALTH_PROBE_KEY))).value
    assert type(alone) is StoreUnavailable and "cannot reach its database" in str(alone)
    together = [master.remote.get(HEALTH_PROBE_KEY), master.remote.get("nope")]
    master.settle(together[0])
    assert type(failure_of(together[0]).value) is StoreUnavailable
    assert failure_of(together[1]).check(KeyNotFound)


def test_calls_refused_for_the_secret_are_logged_at_most_once_an_interval(log_events: LogCapture) -> None:
    """Review 35: each refused call wrote a warning of its own: 2,000 pipelined calls, 2,000 lines in
    0.65 s. One line an interval now, counting those left out."""
    from goto_tw.rpc import REFUSAL_LOG_INTERVAL

    clock = Clock()
    root = Resource()
    root.putChild(b"RPC2", RPCResource(URLStore(), b"the-secret", clock=clock))
    stub: Any = StubTreq(root)
    body = xmlrpclib.dumps(("0",), "Store.Get").encode()

    def refused_call() -> None:
        answer = stub.post(RPC_URL, data=body)
        stub.flush()
        assert b"faultCode" in result_of(result_of(answer).content())

    for _ in range(50):
        refused_call()
    lines = [m for m in log_events.messages() if "Refused an RPC call" in m]
    assert len(lines) == 1 and "127.0.0.1" in lines[0], lines
    clock.advance(REFUSAL_LOG_INTERVAL)
    refused_call()
    lines = [m for m in log_events.messages() if "Refused an RPC call" in m]
    assert len(lines) == 2 and "(49 more refused since the last line)" in lines[1], lines
