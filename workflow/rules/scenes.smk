# Scene sources: the built-in analytic scene is rendered here; dataset scenes are downloaded.
# Scenes with a `path:` in the config are used in place and need neither rule.


rule builtin_scene:
    output:
        directory("resources/scenes/{scene}"),
    conda:
        "../../environment.yml"
    log:
        "logs/{scene}/builtin_scene.log",
    wildcard_constraints:
        scene=BUILTIN_SCENES,
    params:
        entry=scene_entry,
    threads: 1
    script:
        "../scripts/builtin_scene.py"


rule download:
    output:
        directory("resources/scenes/{scene}"),
    conda:
        "../../environment.yml"
    log:
        "logs/{scene}/download.log",
    wildcard_constraints:
        scene=URL_SCENES,
    params:
        entry=scene_entry,
    threads: 1
    resources:
        downloads=1,
    script:
        "../scripts/download.py"
