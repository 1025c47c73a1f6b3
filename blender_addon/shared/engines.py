"""The connected backend's engines, and each engine's settings kept on the scene.

The backend's capabilities list each engine's inputs and settings ({name: {type, default, help, min,
max, choices}}), and the engines it cannot run with the reason. The extension knows no engine: it
keeps one value per engine and setting in `scene.marionette.engine_settings` (so values survive a
reconnect and are saved with the .blend) and draws whatever the chosen engine declares. A new
engine in the backend needs nothing here.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..compat import BLEND_RELATIVE_PATH

# The connected backend's engines by name, as its capabilities declare them (runtime, not saved).
declared_engines: dict[str, dict] = {}
# The engines it cannot run, by name -> the reason (the missing package, say).
unavailable_engines: dict[str, str] = {}

VALUE_FIELDS = {"int": "int_value", "float": "float_value", "bool": "bool_value", "str": "string_value",
                "path": "path_value", "choice": "choice_value"}


class EngineSettingError(ValueError):
    """A setting value that cannot be sent; the message names the setting and the fix."""


def _choice_items(item, _context):
    # Blender keeps no reference to the strings returned here: hold them in the cache.
    setting = declared_engines.get(item.engine, {}).get("settings", {}).get(item.setting, {})
    items = setting.setdefault("_items", [(str(c), str(c), "") for c in setting.get("choices", [])])
    return items or [("", "(none)", "")]


class MARIONETTE_PG_engine(bpy.types.PropertyGroup):
    """An engine the connected backend offers (the window manager's runtime list)."""
    description: StringProperty()


class MARIONETTE_PG_engine_setting(bpy.types.PropertyGroup):
    """One engine's value of one setting (name = "engine/setting")."""
    engine: StringProperty()
    setting: StringProperty()
    kind: StringProperty()  # one of VALUE_FIELDS
    int_value: IntProperty(name="Value")
    float_value: FloatProperty(name="Value")
    bool_value: BoolProperty(name="Value")
    string_value: StringProperty(name="Value")
    path_value: StringProperty(name="Value", subtype="DIR_PATH", options=BLEND_RELATIVE_PATH)
    choice_value: EnumProperty(name="Value", items=_choice_items)

    @property
    def value(self):
        if self.kind == "path":
            return self.path_value or None
        if self.kind == "choice":
            return self.choice_value or None
        return getattr(self, VALUE_FIELDS.get(self.kind, "string_value"))

    def set_value(self, value) -> None:
        if value is None:
            return
        field = VALUE_FIELDS.get(self.kind, "string_value")
        setattr(self, field, str(value) if field in ("string_value", "path_value", "choice_value") else value)


def remember_capabilities(capabilities: dict) -> None:
    """Keep the connected backend's engines (runtime list, declarations) and give every scene a
    value for each declared setting."""
    declared_engines.clear()
    for engine in capabilities.get("engines", []):
        declared_engines[engine["name"]] = engine
    unavailable_engines.clear()
    for engine in capabilities.get("unavailable_engines", []):
        unavailable_engines[engine["name"]] = engine.get("reason", "")
    engines = bpy.context.window_manager.marionette_engines
    engines.clear()
    for name, engine in declared_engines.items():
        item = engines.add()
        item.name, item.description = name, engine.get("description", "")
    for scene in bpy.data.scenes:
        sync_scene(scene)


def sync_scene(scene: bpy.types.Scene) -> None:
    """Give the scene a value for every declared setting (its default), keeping values already set."""
    values = scene.marionette.engine_settings
    for name, engine in declared_engines.items():
        for setting, declaration in engine.get("settings", {}).items():
            key = f"{name}/{setting}"
            kind = declaration.get("type", "str")
            item = values.get(key)
            if item is not None and item.kind == kind:
                continue
            if item is None:
                item = values.add()
                item.name, item.engine, item.setting = key, name, setting
            item.kind = kind if kind in VALUE_FIELDS else "str"
            item.set_value(declaration.get("default"))


def settings_for(scene: bpy.types.Scene, engine: str) -> dict:
    """The scene's values of an engine's settings (only those the user or a default gave a value),
    as stored: `//` paths stay relative to the .blend (see absolute_paths)."""
    values = {}
    for item in scene.marionette.engine_settings:
        if item.engine == engine:
            value = item.value
            if value is not None and value != "":
                values[item.setting] = value
    return values


def absolute_paths(engine: dict, values: dict) -> dict:
    """The values with every declared path made absolute for the backend: `//` is the .blend's
    folder, which the backend cannot know (EngineSettingError while the .blend is unsaved)."""
    result = dict(values)
    for name, spec in engine.get("settings", {}).items():
        value = result.get(name)
        if spec.get("type") != "path" or not isinstance(value, str) or not value:
            continue
        if value.startswith("//") and not bpy.data.filepath:
            raise EngineSettingError(f"the {engine['name']} setting '{name}' is {value}, relative to the .blend file, "
                                     f"which is not saved yet; save it or give an absolute folder")
        result[name] = os.path.normpath(bpy.path.abspath(value))
    return result


def draw(layout, scene: bpy.types.Scene, engine: str) -> None:
    """Each declared setting of `engine` with its help one hover away."""
    declaration = declared_engines.get(engine)
    if declaration is None:
        if engine in unavailable_engines:
            layout.label(text=f"Unavailable: {unavailable_engines[engine]}", icon="ERROR")
        else:
            layout.label(text="Press Test to see this engine's settings", icon="INFO")
        return
    values = scene.marionette.engine_settings
    for setting, spec in declaration.get("settings", {}).items():
        item = values.get(f"{engine}/{setting}")
        label = setting.replace("_", " ").title()
        if item is None:
            layout.label(text=f"{label}: press Test to set")
            continue
        row = layout.row(align=True)
        row.prop(item, VALUE_FIELDS.get(item.kind, "string_value"), text=label)
        help_button = row.operator("marionette.setting_help", text="", icon="QUESTION", emboss=False)
        help_button.engine, help_button.setting = engine, setting


def draw_unavailable(layout) -> None:
    """The engines the backend cannot run, greyed, each with its reason."""
    if not unavailable_engines:
        return
    column = layout.column(align=True)
    column.enabled = False
    column.label(text="Unavailable on this backend:")
    for name, reason in unavailable_engines.items():
        column.label(text=f"{name}: {reason}", icon="CANCEL")


class MARIONETTE_OT_setting_help(bpy.types.Operator):
    """What an engine setting does (from the backend's declaration)"""
    bl_idname = "marionette.setting_help"
    bl_label = "Setting Help"
    bl_options = {"INTERNAL"}

    engine: StringProperty()
    setting: StringProperty()

    @classmethod
    def description(cls, _context, properties):
        spec = declared_engines.get(properties.engine, {}).get("settings", {}).get(properties.setting, {})
        text = spec.get("help") or properties.setting
        default = spec.get("default")
        return f"{text} (default: {default})" if default is not None else text

    def execute(self, _context):
        self.report({"INFO"}, self.description(bpy.context, self))
        return {"FINISHED"}


classes = (MARIONETTE_PG_engine, MARIONETTE_PG_engine_setting, MARIONETTE_OT_setting_help)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.marionette_engines = CollectionProperty(type=MARIONETTE_PG_engine)


def unregister():
    del bpy.types.WindowManager.marionette_engines
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
