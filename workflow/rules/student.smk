# Stage 3: distil the pseudo views into the student (hard-example mining), then finetune it on the real
# training views, keeping the checkpoint that is best on the validation views. {extra} is "" for the scene's
# own student family (results/{scene}/student/) and "_NAME" for each family of student.compare
# (results/{scene}/student_NAME/).


rule train_student:
    input:
        scene=scene_dir,
        pseudo="results/{scene}/pseudo_data/meta.json",
        val="results/{scene}/real_data/val/meta.json",
    output:
        model="results/{scene}/student{extra}/model.pt",
        history="results/{scene}/student{extra}/history.csv",
    log:
        "logs/{scene}/train_student{extra}.log",
    benchmark:
        "benchmarks/{scene}/train_student{extra}.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("student")
    resources:
        **job_resources("student"),
    params:
        settings=student_settings("student"),
        resume_dir="resources/resume/{scene}/student{extra}",
    script:
        "../scripts/train_student.py"


rule finetune:
    input:
        scene=scene_dir,
        student="results/{scene}/student{extra}/model.pt",
        real="results/{scene}/real_data/train/meta.json",
        val="results/{scene}/real_data/val/meta.json",
    output:
        model="results/{scene}/finetuned{extra}/model.pt",
        history="results/{scene}/finetuned{extra}/history.csv",
    log:
        "logs/{scene}/finetune{extra}.log",
    benchmark:
        "benchmarks/{scene}/finetune{extra}.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("finetune")
    resources:
        **job_resources("finetune"),
    params:
        settings=student_settings("student", "finetune"),
        resume_dir="resources/resume/{scene}/finetune{extra}",
    script:
        "../scripts/finetune.py"
