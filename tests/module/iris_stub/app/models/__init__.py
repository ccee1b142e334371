"""``app.models`` as IRIS 2.4 has it: the models re-exported, ``Cases`` included; ``IocLink`` only on 2.4.

On 2.5 the package re-exports nothing (its ``__init__.py`` is empty): ``set_variant("2.5")`` removes these names."""

from app.models.authorization import User
from app.models.cases import Cases
from app.models.models import (
    Alert,
    AnalysisStatus,
    AssetsType,
    CaseAssets,
    CaseState,
    Client,
    Ioc,
    IocLink,
    IocType,
    Severity,
    Tags,
    Tlp,
    reset,
    set_variant,
)

__all__ = ["Alert", "AnalysisStatus", "AssetsType", "CaseAssets", "CaseState", "Cases", "Client", "Ioc", "IocLink",
           "IocType", "Severity", "Tags", "Tlp", "User", "reset", "set_variant"]
