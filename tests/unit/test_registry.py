"""The driver registry: built-ins, entry points, lazy imports, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from drivers.base import Device
from testbed import registry
from testbed.errors import ConfigError
from testbed.registry import BUILTIN, ENTRY_POINT_GROUP, catalog, driver_class, targets


class FakeRadio(Device):
    """A third-party driver, as an entry point would name it."""

    kind = "radio"
    actions = frozenset({"ptt_on", "ptt_off"})

    def safe_state(self) -> None:
        pass


class NotADevice:
    actions = frozenset({"link_down"})


def not_a_class() -> None:
    pass


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


HERE = __name__  # the module name pytest imported this file under


@pytest.fixture(autouse=True)
def fresh_targets() -> Iterator[None]:
    targets.cache_clear()
    yield
    targets.cache_clear()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Replace the installed entry points of the process with the given ones."""

    def install(*points: EntryPoint) -> None:
        def fake_entry_points(*, group: str) -> list[EntryPoint]:
            return [p for p in points if p.group == group]

        monkeypatch.setattr(registry, "entry_points", fake_entry_points)
        targets.cache_clear()

    return install


@pytest.mark.parametrize(("kind", "driver"), sorted(BUILTIN))
def test_builtin_targets_import_as_device_classes(kind: str, driver: str) -> None:
    cls = driver_class(kind, driver)
    assert isinstance(cls, type)
    assert issubclass(cls, Device)
    module, _, attr = BUILTIN[(kind, driver)].partition(":")
    assert (cls.__module__, cls.__name__) == (module, attr)
    assert cls.kind == kind
    assert isinstance(catalog(kind, driver), frozenset)


def test_builtins_are_targets_without_entry_points(installed: Callable[..., None]) -> None:
    installed()
    assert targets() == BUILTIN


def test_catalog_of_emulated_network_has_link_actions() -> None:
    actions = catalog("network", "emulated")
    assert actions is not None
    assert {"link_down", "link_up"} <= actions


def test_catalog_of_unknown_driver_is_none() -> None:
    assert catalog("network", "nope") is None
    assert catalog("nokind", "emulated") is None


def test_unknown_driver_is_a_config_error_listing_known_drivers() -> None:
    with pytest.raises(ConfigError) as caught:
        driver_class("network", "nope")
    message = str(caught.value)
    assert "'nope'" in message and "'network'" in message
    for kind, driver in BUILTIN:
        assert f"{kind}/{driver}" in message
    assert len(caught.value.problems) == 1


def test_entry_point_driver_is_found(installed: Callable[..., None]) -> None:
    installed(ep("radio.fake", f"{HERE}:FakeRadio"))
    assert targets()[("radio", "fake")] == f"{HERE}:FakeRadio"
    cls = driver_class("radio", "fake")
    assert cls.__name__ == "FakeRadio"
    assert issubclass(cls, Device)
    assert catalog("radio", "fake") == frozenset({"ptt_on", "ptt_off"})
    # built-ins are still there
    assert catalog("network", "emulated") is not None


def test_entry_point_overrides_builtin(installed: Callable[..., None]) -> None:
    installed(ep("network.emulated", f"{HERE}:FakeRadio"))
    assert driver_class("network", "emulated").__name__ == "FakeRadio"


def test_entry_point_without_kind_prefix_is_ignored(installed: Callable[..., None]) -> None:
    installed(ep("fake", f"{HERE}:FakeRadio"), ep("radio.", f"{HERE}:FakeRadio"))
    assert targets() == BUILTIN


def test_entry_points_of_other_groups_are_ignored(installed: Callable[..., None]) -> None:
    installed(EntryPoint(name="radio.fake", value=f"{HERE}:FakeRadio", group="other.group"))
    assert catalog("radio", "fake") is None


def test_targets_are_cached_until_cleared(installed: Callable[..., None]) -> None:
    installed()
    assert ("radio", "fake") not in targets()
    installed_now = targets()
    installed(ep("radio.fake", f"{HERE}:FakeRadio"))  # clears the cache
    assert ("radio", "fake") in targets()
    assert ("radio", "fake") not in installed_now


@pytest.mark.parametrize("attr", ["NotADevice", "not_a_class", "HERE"])
def test_target_that_is_not_a_device_class_is_a_config_error(
    installed: Callable[..., None], attr: str
) -> None:
    installed(ep("radio.bad", f"{HERE}:{attr}"))
    with pytest.raises(ConfigError, match="not a Device class") as caught:
        driver_class("radio", "bad")
    assert "radio/bad" in str(caught.value)
    with pytest.raises(ConfigError):
        catalog("radio", "bad")


@pytest.mark.parametrize(
    "value",
    [
        "no_such_module_for_testbed_tests:Driver",  # module missing
        f"{HERE}:NoSuchClass",  # attribute missing
        f"{HERE}",  # no ":Class" part
        "drivers.no_such_driver:Driver",  # missing submodule of a real package
    ],
)
def test_target_that_cannot_be_imported_is_a_config_error(
    installed: Callable[..., None], value: str
) -> None:
    installed(ep("radio.broken", value))
    with pytest.raises(ConfigError, match="cannot be loaded") as caught:
        driver_class("radio", "broken")
    assert value in str(caught.value)
    assert "radio/broken" in str(caught.value)
    assert not isinstance(caught.value, ImportError)


def test_driver_whose_dependency_is_missing_is_a_config_error(
    installed: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tb_test_vendor_driver.py").write_text("import tb_test_vendor_sdk_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed(ep("radio.vendor", "tb_test_vendor_driver:Radio"))
    with pytest.raises(ConfigError, match="tb_test_vendor_sdk_not_installed"):
        driver_class("radio", "vendor")


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("tb_test_syntax_driver", "class Radio(:\n"),
        ("tb_test_raising_driver", "raise RuntimeError('vendor SDK licence missing')\n"),
    ],
    ids=["syntax-error", "runtime-error"],
)
def test_driver_module_failing_at_import_is_a_config_error(
    installed: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    source: str,
) -> None:
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    installed(ep("radio.vendor", f"{module}:Radio"))
    with pytest.raises(ConfigError, match="radio/vendor"):
        driver_class("radio", "vendor")


def test_registry_import_is_lazy(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        import testbed.registry
        heavy = ["drivers.traffic.probe", "drivers.traffic.emulated",
                 "drivers.network.emulated", "drivers.netns", "drivers.capture.dumpcap"]
        loaded = [m for m in heavy if m in sys.modules]
        assert not loaded, loaded
        testbed.registry.catalog("network", "nope")  # lists targets: still nothing imported
        loaded = [m for m in heavy if m in sys.modules]
        assert not loaded, loaded
        testbed.registry.driver_class("traffic", "emulated")
        assert "drivers.traffic.probe" in sys.modules  # the check above can see an import
        assert "drivers.network.emulated" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
