"""Inside a fresh Blender process: install the extension from its zip, run one test case, report."""

import importlib.util
import json
import os
import sys
import traceback


def main() -> int:
    request = json.loads(sys.argv[1])
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if request["zip"]:
        result = bpy.ops.extensions.package_install_files(
            filepath=request["zip"], repo="user_default", enable_on_install=True)
        if result != {"FINISHED"} or not hasattr(bpy.ops, "marionette") or not hasattr(bpy.types.Scene, "marionette"):
            print("the extension did not install and register from the zip", flush=True)
            return 2
    sys.path.insert(0, os.path.dirname(request["module"]))
    spec = importlib.util.spec_from_file_location("marionette_test_case", request["module"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value = getattr(module, request["function"])(**request["kwargs"])
    print("MARIONETTE-TEST-RESULT:" + json.dumps(value), flush=True)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
