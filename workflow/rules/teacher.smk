# Stage 1: train the NeRF / grid teacher on the real training views.


rule train_teacher:
    input:
        scene=scene_dir,
    output:
        model="results/{scene}/teacher/model.pt",
    conda:
        "../../environment.yml"
    log:
        "logs/{scene}/train_teacher.log",
    benchmark:
        "benchmarks/{scene}/train_teacher.tsv"
    params:
        resume_dir="resources/resume/{scene}/teacher",
    threads: workflow.cores
    resources:
        gpu=1,
    script:
        "../scripts/train_teacher.py"
