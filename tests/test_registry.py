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
