# Stage 1: train the NeRF / grid teacher on the real training views.


rule train_teacher:
    input:
        scene=scene_dir,
    output:
        model="results/{scene}/teacher/model.pt",
        history="results/{scene}/teacher/history.csv",
    log:
        "logs/{scene}/train_teacher.log",
    benchmark:
        "benchmarks/{scene}/train_teacher.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("teacher")
    resources:
        **job_resources("teacher"),
    params:
        settings=settings("teacher"),
        resume_dir="resources/resume/{scene}/teacher",
    script:
        "../scripts/train_teacher.py"
