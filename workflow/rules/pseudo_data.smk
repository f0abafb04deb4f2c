# Stage 2: pseudo views rendered by the teacher from random poses, and the real views in the same
# storage format. The views are rendered by pseudo_data.jobs jobs (pseudo_data_part), each a contiguous
# run of the shards in its own folder; each declares only its part.json, written last, so the shards of
# a killed job stay in place and a rerun renders only what is missing. The pseudo_data rule then writes
# the store's meta.json listing the parts' shards (nothing is copied).


rule pseudo_data_part:
    input:
        scene=scene_dir,
        teacher="results/{scene}/teacher/model.pt",
        exists=existing_part,
    output:
        part="results/{scene}/pseudo_data/part_{part}/part.json",
    log:
        "logs/{scene}/pseudo_data.part_{part}.log",
    benchmark:
        "benchmarks/{scene}/pseudo_data.part_{part}.tsv"
    wildcard_constraints:
        part="[0-9]+",
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("pseudo_data")
    resources:
        **job_resources("pseudo_data"),
    params:
        settings=settings("pseudo_data"),
    script:
        "../scripts/pseudo_data_part.py"


rule pseudo_data:
    input:
        parts=pseudo_parts,
    output:
        meta="results/{scene}/pseudo_data/meta.json",
    log:
        "logs/{scene}/pseudo_data.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
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
