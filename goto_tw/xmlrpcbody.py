"""Parsing an XML-RPC call from an untrusted body: UTF-8 only, and no document type declaration.

``xmlrpc.client.loads`` hands the body to expat as it is: expat honours a UTF-16 byte-order mark
and expands entities declared in a DTD, so a "billion laughs" body costs the master CPU for every
small request (expat's own amplification limit stops it only after megabytes of work), and a byte
search for ``<!DOCTYPE`` is blind to the same body in UTF-16. XML-RPC needs neither: here a body
that is not UTF-8 is refused before parsing, and the parser stops at the first sign of a DTD (as
``defusedxml`` does), before any entity is declared, let alone expanded. For any other body the
result is exactly ``xmlrpc.client.loads``'s.

A body in the canonical form goto's own slaves and master write is read by :mod:`goto_tw.rpcwire`
instead (the same result, several times faster; expat's per-element callbacks are slow on PyPy);
any other body goes to expat as described above.
"""

from __future__ import annotations

import xmlrpc.client as xmlrpclib
from typing import Any, NoReturn
from xml.parsers import expat

from goto_tw import rpcwire


class RefusedBody(ValueError):
    """The body is not one an XML-RPC server should parse; ``str()`` says why, for the caller."""


def _refuse_dtd(*_: object) -> NoReturn:
    raise RefusedBody("XML-RPC has no use for a DOCTYPE or entities; this body is refused")


def parse_call(body: bytes, *, use_datetime: bool = False) -> tuple[tuple[Any, ...], str | None]:
    """Return ``(params, method name)`` of an XML-RPC call or response, as ``xmlrpc.client.loads`` would
    (the method name is ``None`` for a response; a fault response raises ``xmlrpc.client.Fault``).

    Raises :class:`RefusedBody` for a body that is not UTF-8 or that holds a DTD, and whatever
    ``loads`` raises for a malformed one.
    """
    canonical = rpcwire.loads(body)
    if canonical is not None:
        return canonical
    return parse_with_expat(body, use_datetime=use_datetime)


def parse_with_expat(body: bytes, *, use_datetime: bool = False) -> tuple[tuple[Any, ...], str | None]:
    """:func:`parse_call` without the canonical fast path: the hardened parser and the library's
    ``Unmarshaller`` for every body (the reference the fast path is tested against)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise RefusedBody("an XML-RPC body must be UTF-8") from None
    unmarshaller = xmlrpclib.Unmarshaller(use_datetime=use_datetime)
    # Named encoding: the document's own declaration (say, encoding="UTF-16") is ignored.
    parser = expat.ParserCreate("UTF-8", None)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.UnparsedEntityDeclHandler = _refuse_dtd
    parser.ExternalEntityRefHandler = _refuse_dtd
    parser.StartElementHandler = unmarshaller.start
    parser.EndElementHandler = unmarshaller.end
    parser.CharacterDataHandler = unmarshaller.data
    unmarshaller.xml(None, None)  # type: ignore[arg-type]  # as ExpatParser: the text comes decoded
    parser.Parse(body, True)
    return unmarshaller.close(), unmarshaller.getmethodname()
