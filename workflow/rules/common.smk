# Config handling and input functions shared by every stage.

import re

from r2l.workflow import scene_source_dir

SCENES = list(config["scenes"])


def scenes_where(test):
    """A wildcard constraint matching exactly the scenes whose config entry passes ``test``."""
    names = [name for name, entry in config["scenes"].items() if test(entry)]
    return "|".join(re.escape(name) for name in names) or "(?!)"


BUILTIN_SCENES = scenes_where(lambda entry: entry["format"] == "builtin")
URL_SCENES = scenes_where(lambda entry: "url" in entry)


def scene_dir(wildcards):
    """The scene's folder: its configured ``path:`` or the one the builtin/download rule makes."""
    return str(scene_source_dir(config, wildcards.scene))


def scene_entry(wildcards):
    return config["scenes"][wildcards.scene]


def final_outputs():
    """The targets of the default run: every stage's product for every scene, then the summary."""
    return expand("resources/scenes/{scene}", scene=SCENES)
