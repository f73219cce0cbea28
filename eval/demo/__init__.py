"""The demo: bundled real photos (faces/, see CREDITS.md) and the demo run built from them (build.py)."""
