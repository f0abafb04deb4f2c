# Scene sources: the built-in analytic scene is rendered here; dataset scenes are downloaded.
# Scenes with a `path:` in the config are used in place and need neither rule.


rule builtin_scene:
    output:
        directory("resources/scenes/{scene}"),
    log:
        "logs/{scene}/builtin_scene.log",
    wildcard_constraints:
        scene=BUILTIN_SCENES,
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        entry=scene_entry,
    script:
        "../scripts/builtin_scene.py"


rule download:
    output:
        directory("resources/scenes/{scene}"),
    log:
        "logs/{scene}/download.log",
    wildcard_constraints:
        scene=URL_SCENES,
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
        downloads=1,
    params:
        entry=scene_entry,
    script:
        "../scripts/download.py"
