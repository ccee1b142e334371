"""Opening pika's BlockingConnection in every server model IRIS runs the module in.

IRIS 2.4's web app is gunicorn's ``--worker-class eventlet`` (eventlet 0.30.2), which monkey-patches the
standard library before IRIS is imported; preload hooks such as ``on_preload_ioc_delete`` run there. pika
resolves the broker's host by calling ``socket.getaddrinfo(host=..., port=..., family=..., type=...,
proto=..., flags=...)`` with keywords, and under the patch ``socket.getaddrinfo`` is eventlet's greendns
version, whose parameters are named differently (``socktype``, not ``type``): every connection fails with
``TypeError: getaddrinfo() got an unexpected keyword argument 'type'``.

The standard library and greendns agree on the *positions* of the arguments, so connections opened here
resolve the host with a positional call and hand the records to pika's connection workflow through its own
I/O-services interface (``getaddrinfo`` of :class:`~pika.adapters.utils.nbio_interface.AbstractIOServices`).
Nothing global is patched, in pika, eventlet or ``socket``: only the connections this module opens through
:func:`open_blocking_connection` resolve this way, and the rest of the process is untouched. Under eventlet the
positional call is greendns's, so a lookup yields to other green threads instead of blocking the worker.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, List, Optional, Sequence, Union

import pika
from pika.adapters import select_connection
from pika.adapters.utils import nbio_interface
from pika.adapters.utils.selector_ioloop_adapter import SelectorIOServicesAdapter


def resolve(host: str, port: int, family: int = 0, socktype: int = 0, proto: int = 0,
            flags: int = 0) -> List[Any]:
    """``socket.getaddrinfo`` called positionally, which the stdlib and eventlet's greendns both accept.

    ``socket.getaddrinfo`` is looked up at call time, so under monkey-patching this is the green version.
    """
    return socket.getaddrinfo(host, port, family, socktype, proto, flags)


class _Lookup(nbio_interface.AbstractIOReference):
    """A finished lookup whose result waits for the I/O loop; pika may cancel it before it is delivered."""

    def __init__(self, result: Union[List[Any], BaseException]) -> None:
        self._result = result
        self._state = "pending"

    def cancel(self) -> bool:
        """pika's workflow cancels pending lookups when it is aborted (e.g. its stack timeout)."""
        if self._state != "pending":
            return False
        self._state = "cancelled"
        return True

    def deliver(self, on_done: Callable[[Any], None]) -> None:
        if self._state == "pending":
            self._state = "delivered"
            on_done(self._result)


class _PositionalResolverServices(SelectorIOServicesAdapter):
    """pika's select-loop I/O services, except that host lookups call ``getaddrinfo`` positionally."""

    def getaddrinfo(self, host: str, port: int, on_done: Callable[[Any], None], family: int = 0,
                    socktype: int = 0, proto: int = 0, flags: int = 0) -> nbio_interface.AbstractIOReference:
        """Resolve now and report from the loop, as pika expects (never from inside this call)."""
        result: Union[List[Any], BaseException]
        try:
            result = resolve(host, port, family, socktype, proto, flags)
        except Exception as exc:  # noqa: BLE001 - handed to pika, which reports it as the connection error
            result = exc
        lookup = _Lookup(result)
        self._loop.add_callback(lambda: lookup.deliver(on_done))
        return lookup


class _SelectConnection(select_connection.SelectConnection):
    """pika's SelectConnection whose connection workflow uses :class:`_PositionalResolverServices`."""

    @classmethod
    def create_connection(cls, connection_configs: Sequence[pika.connection.Parameters],
                          on_done: Callable[[Any], None], custom_ioloop: Optional[Any] = None,
                          workflow: Optional[Any] = None) -> Any:
        """Same as pika's, with our I/O services (pika's own builds a SelectorIOServicesAdapter here)."""
        nbio = _PositionalResolverServices(custom_ioloop or select_connection.IOLoop())

        def connection_factory(params: Optional[pika.connection.Parameters]) -> "_SelectConnection":
            if params is None:
                raise ValueError("expected pika.connection.Parameters, got None")
            return cls(parameters=params, custom_ioloop=nbio, internal_connection_workflow=False)

        return cls._start_connection_workflow(connection_configs=connection_configs,
                                              connection_factory=connection_factory, nbio=nbio,
                                              workflow=workflow, on_done=on_done)


def open_blocking_connection(parameters: pika.connection.Parameters) -> pika.BlockingConnection:
    """A BlockingConnection that also connects under eventlet's monkey-patching (see the module docstring).

    ``_impl_class`` is BlockingConnection's own hook for choosing the SelectConnection it drives (present
    throughout pika 1.x, which the package requires).
    """
    return pika.BlockingConnection(parameters, _impl_class=_SelectConnection)
