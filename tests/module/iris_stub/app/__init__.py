"""A minimal stand-in for IRIS's ``app`` package (iris-web), for the module's tests.

It provides exactly what ``iris_interface`` imports, plus ``app.models`` with IRIS-shaped model classes and the
sliver of Flask-SQLAlchemy's query API the module's adapter uses. ``app.models.set_variant("2.4"|"2.5")``
switches between IRIS 2.4 (IOCs linked to cases through ``IocLink``) and 2.5 (``Ioc.case_id``; no ``IocLink``).
"""


class _Session:
    """IRIS commits the worker's session after a hook; nothing to do here."""

    def commit(self) -> None:
        pass

    def add(self, obj: object) -> None:
        pass

    def delete(self, obj: object) -> None:
        pass

    def merge(self, obj: object) -> object:
        return obj


class _DB:
    session = _Session()


db = _DB()
