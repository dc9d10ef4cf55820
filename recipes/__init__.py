"""Ready recipes. Each module defines one `Recipe` subclass; its name (the module name) is what `recipe:` says.

A new recipe is one file here plus one YAML next to it; nothing needs registering.
"""
