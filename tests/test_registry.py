import importlib
import sys

import pytest

from unified.registry import Registry, RegistryError, import_plugins


def test_lookup_and_listing():
    reg: Registry[type] = Registry("widget")

    @reg.register("alpha")
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha
    assert "alpha" in reg and reg.names() == ["alpha"]
    assert reg.origin("alpha") == __name__


def test_missing_name_lists_registered_closest_and_origin():
    reg: Registry[type] = Registry("widget")
    reg.add("detect", type("D", (), {}))
    reg.add("jde", type("J", (), {}))
    with pytest.raises(RegistryError) as info:
        reg.get("detcet")
    message = str(info.value)
    assert "unknown widget 'detcet'" in message
    assert "Did you mean 'detect'?" in message
    assert "jde (" in message and "detect (" in message


def test_double_registration_is_an_error():
    reg: Registry[type] = Registry("widget")
    reg.add("a", int)
    reg.add("a", int)  # the same object again is harmless (module re-import)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", float)


def test_default_modules_are_imported_lazily():
    reg: Registry[type] = Registry("task", default_modules=("unified.config",))
    assert reg._defaults_loaded is False
    reg.names()
    assert reg._defaults_loaded is True


def test_plugin_import_error_names_the_path():
    with pytest.raises(ImportError, match="no_such_plugin_module"):
        import_plugins(["no_such_plugin_module"])


# -- entry points: an installed third-party package found without `plugins:` ----------------------------------
def _install_fake_package(root, group: str, declared: str, plugin_source: str) -> None:
    """Lay out, on a folder put on sys.path, what pip leaves for an installed plugin package: its module, a
    module holding the registry it extends, and a dist-info whose entry_points.txt declares the plugin."""
    (root / "fake_widget_home.py").write_text(
        "from unified.registry import Registry\n"
        f"WIDGETS = Registry('widget', default_modules=('fake_widget_builtin',), entry_point_group={group!r})\n"
    )
    (root / "fake_widget_builtin.py").write_text(
        "from fake_widget_home import WIDGETS\n\n@WIDGETS.register('gear')\nclass Gear:\n    pass\n"
    )
    (root / "fake_widget_plugin.py").write_text(plugin_source)
    info = root / "fake_widget_pack-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-widget-pack\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{declared}]\nsprocket = fake_widget_plugin\n")


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Installs the fake package for one test and forgets its modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's (metadata) caches
    for name in ("fake_widget_home", "fake_widget_builtin", "fake_widget_plugin"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    def install(
        plugin_source: str, group: str = "unified.test_widgets", declared: str = "unified.test_widgets"
    ):
        _install_fake_package(tmp_path, group, declared, plugin_source)
        importlib.invalidate_caches()
        return importlib.import_module("fake_widget_home").WIDGETS

    yield install
    for name in ("fake_widget_home", "fake_widget_builtin", "fake_widget_plugin"):
        sys.modules.pop(name, None)


PLUGIN = "from fake_widget_home import WIDGETS\n\n@WIDGETS.register('sprocket')\nclass Sprocket:\n    pass\n"


def test_an_installed_package_is_found_through_its_entry_point(fake_package):
    widgets = fake_package(PLUGIN)
    assert "fake_widget_plugin" not in sys.modules  # nothing is imported before the first lookup
    assert widgets.get("sprocket").__name__ == "Sprocket"
    assert widgets.origin("sprocket") == "fake_widget_plugin"
    assert widgets.names() == ["gear", "sprocket"]


def test_a_failed_lookup_lists_entry_point_entries_and_names_the_group(fake_package):
    widgets = fake_package(PLUGIN)
    with pytest.raises(RegistryError) as info:
        widgets.get("sprockett")
    message = str(info.value)
    assert "Did you mean 'sprocket'?" in message
    assert "gear (fake_widget_builtin)" in message and "sprocket (fake_widget_plugin)" in message
    assert "'unified.test_widgets'" in message


def test_only_the_registry_s_own_group_is_read(fake_package):
    widgets = fake_package(PLUGIN, declared="unified.other_widgets")
    assert widgets.names() == ["gear"]
    assert "fake_widget_plugin" not in sys.modules


def test_a_broken_installed_package_is_named_every_time(fake_package):
    widgets = fake_package("raise RuntimeError('half-installed')\n")
    for _ in range(2):  # the second lookup must not pretend the plugin was never there
        with pytest.raises(ImportError) as info:
            widgets.get("gear")
        message = str(info.value)
        assert "'sprocket' = 'fake_widget_plugin'" in message and "'fake-widget-pack'" in message
        assert "RuntimeError: half-installed" in message


def test_a_package_reusing_a_built_in_name_is_the_one_blamed(fake_package):
    clash = "from fake_widget_home import WIDGETS\n\n@WIDGETS.register('gear')\nclass OtherGear:\n    pass\n"
    widgets = fake_package(clash)
    with pytest.raises(ImportError, match="fake-widget-pack.*already registered by fake_widget_builtin"):
        widgets.names()


def test_tasks_kinds_and_formats_of_installed_plugins_come_from_one_group():
    """A plugin package registers its kinds of label and formats next to its tasks: one entry point in
    ``unified.tasks`` must make all three known, whichever registry is asked first."""
    from unified.data.formats import FORMATS
    from unified.data.kinds import LABEL_KINDS
    from unified.task import TASKS

    assert (
        TASKS.entry_point_group
        == LABEL_KINDS.entry_point_group
        == FORMATS.entry_point_group
        == "unified.tasks"
    )


def test_installed_names_leave_out_what_a_script_registered(fake_package):
    from unified.task import TASKS

    installed = TASKS.installed_names()
    assert {"detect", "jdc", "jde", "pose", "segment"} <= set(installed)
    importlib.import_module("tests.plugins.landmark_task")  # registered on the fly, not installed
    assert "landmark" in TASKS.names() and "landmark" not in TASKS.installed_names()
    assert "sprocket" in fake_package(PLUGIN).installed_names()  # an installed package's entry point
