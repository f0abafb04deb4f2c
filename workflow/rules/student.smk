# Stage 3: distil the pseudo views into the R2L student (hard-example mining), then finetune it on
# the real training views, keeping the checkpoint that is best on the validation views.


rule train_student:
    input:
        scene=scene_dir,
        pseudo="results/{scene}/pseudo_data/meta.json",
        val="results/{scene}/real_data/val/meta.json",
    output:
        model="results/{scene}/student/model.pt",
        history="results/{scene}/student/history.csv",
    log:
        "logs/{scene}/train_student.log",
    benchmark:
        "benchmarks/{scene}/train_student.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("student")
    resources:
        **job_resources("student"),
    params:
        settings=settings("student"),
        resume_dir="resources/resume/{scene}/student",
    script:
        "../scripts/train_student.py"


rule finetune:
    input:
        scene=scene_dir,
        student="results/{scene}/student/model.pt",
        real="results/{scene}/real_data/train/meta.json",
        val="results/{scene}/real_data/val/meta.json",
    output:
        model="results/{scene}/finetuned/model.pt",
        history="results/{scene}/finetuned/history.csv",
    log:
        "logs/{scene}/finetune.log",
    benchmark:
        "benchmarks/{scene}/finetune.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("finetune")
    resources:
        **job_resources("finetune"),
    params:
        settings=settings("student", "finetune"),
        resume_dir="resources/resume/{scene}/finetune",
    script:
        "../scripts/finetune.py"
