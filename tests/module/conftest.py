"""Fixtures for the IRIS module's tests: the stub of IRIS's ``app`` package on ``sys.path``, IRIS-shaped data
for 2.4 and 2.5, the module configured as an IRIS admin would, and the real RabbitMQ.

RabbitMQ-dependent tests fail (never skip) when the broker is down: a green run must mean the module really
published and the messages were really read back.
"""

from __future__ import annotations

import os
import sys

import pytest

from iris_opencti_module.core.masking import mask_url

STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "iris_stub")
if STUB not in sys.path:
    sys.path.insert(0, STUB)

from .broker import AMQP_URL, Rabbit, broker_problem  # noqa: E402
from .iris_world import IrisWorld, ModuleHarness  # noqa: E402


@pytest.fixture
def rabbit():
    problem = broker_problem(AMQP_URL)
    if problem:
        pytest.fail(f"RabbitMQ is required for this test and is not usable at {mask_url(AMQP_URL)}: {problem} (start "
                    "it with "
                    "scripts/services.sh)")
    broker = Rabbit(AMQP_URL)
    yield broker
    broker.cleanup()


@pytest.fixture(params=["2.4", "2.5"])
def iris(request):
    """IRIS 2.4 and 2.5 in turn (tests using it run twice)."""
    return IrisWorld(request.param)


@pytest.fixture
def iris24():
    return IrisWorld("2.4")


@pytest.fixture
def iris25():
    return IrisWorld("2.5")


@pytest.fixture
def module(rabbit, tmp_path):
    """The module as IRIS runs it (a new instance per hook), publishing to a fresh queue on the real broker."""
    harness = ModuleHarness(rabbit, str(tmp_path / "spool"))
    yield harness
    harness.close()
