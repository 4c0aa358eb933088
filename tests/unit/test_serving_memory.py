"""serving/memory.py: the server pins glibc's malloc thresholds unless the operator has set them."""

from deploylm.serving.memory import OPERATOR_SETTINGS, pin_malloc_thresholds


def test_thresholds_from_the_environment_are_left_alone(monkeypatch):
    for name in OPERATOR_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4194304")
    assert pin_malloc_thresholds() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert pin_malloc_thresholds() is False
