"""Environment variables are read in one place (deploylm.settings); bad values get a clear error."""

import os

import pytest

from deploylm import settings
from deploylm.errors import ConfigError


@pytest.mark.parametrize("value, policy", [(None, "always"), ("1", "always"), ("0", "never"), ("never", "never"),
                                           ("during-run", "during-run"), ("DURING-RUN", "during-run")])
def test_spin_wait_policies(monkeypatch, value, policy):
    if value is None:
        monkeypatch.delenv("DEPLOYLM_SPIN_WAIT", raising=False)
    else:
        monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", value)
    assert settings.spin_wait() == policy


def test_spin_wait_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "sometimes")
    with pytest.raises(ConfigError, match="during-run"):
        settings.spin_wait()


def test_serving_threads_spin_only_during_a_call_unless_told(monkeypatch):
    monkeypatch.delenv("DEPLOYLM_SPIN_WAIT", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test: "never" sets it
    settings.use_serving_threads()
    assert settings.spin_wait() == "during-run"
    assert int(os.environ["GOMP_SPINCOUNT"]) > 0
    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "never")  # an explicit choice wins
    settings.use_serving_threads()
    assert settings.spin_wait() == "never"


def test_ort_session_options_follow_the_policy(monkeypatch):
    from deploylm.runtime.ort_runner import session_options

    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "during-run")
    so = session_options(threads=1)
    assert so.get_session_config_entry("session.force_spinning_stop") == "1"
    monkeypatch.setenv("DEPLOYLM_SPIN_WAIT", "never")
    assert session_options(threads=1).get_session_config_entry("session.intra_op.allow_spinning") == "0"
