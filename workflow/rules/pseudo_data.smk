# Stage 2: pseudo views rendered by the teacher from random poses, and the real views in the same
# storage format. Only meta.json is declared: it is written last, so the shards of a killed run stay
# in place and a rerun renders only what is missing.


rule pseudo_data:
    input:
        scene=scene_dir,
        teacher="results/{scene}/teacher/model.pt",
    output:
        meta="results/{scene}/pseudo_data/meta.json",
    log:
        "logs/{scene}/pseudo_data.log",
    benchmark:
        "benchmarks/{scene}/pseudo_data.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("pseudo_data")
    resources:
        **job_resources("pseudo_data"),
    params:
        settings=settings("pseudo_data"),
    script:
        "../scripts/pseudo_data.py"


rule real_data:
    input:
        scene=scene_dir,
    output:
        train="results/{scene}/real_data/train/meta.json",
        val="results/{scene}/real_data/val/meta.json",
    log:
        "logs/{scene}/real_data.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        settings=settings(),
    script:
        "../scripts/real_data.py"
