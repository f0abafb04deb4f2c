# Stage 4: score teacher, student and finetuned student (and those of student.compare's families) on the
# test views (quality, FLOPs, speed, size) in one job on one device; then figures (the comparison, the
# training curves), a video and the tables.


rule evaluate:
    input:
        scene=scene_dir,
        teacher="results/{scene}/teacher/model.pt",
        student="results/{scene}/student/model.pt",
        finetuned="results/{scene}/finetuned/model.pt",
        compared_students=compared_models("student"),
        compared_finetuned=compared_models("finetuned"),
    output:
        metrics=report(
            "results/{scene}/metrics.csv",
            caption="../report/metrics.rst",
            category="Tables",
            subcategory="{scene}",
            labels={"scene": "{scene}", "figure": "metrics"},
        ),
        renders=directory("results/{scene}/renders"),
    log:
        "logs/{scene}/evaluate.log",
    benchmark:
        "benchmarks/{scene}/evaluate.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("evaluate")
    resources:
        **job_resources("evaluate"),
    params:
        settings=settings("evaluate"),
    script:
        "../scripts/evaluate.py"


rule comparison_figure:
    input:
        scene=scene_dir,
        renders="results/{scene}/renders",
        student_model="results/{scene}/student/model.pt",  # their student family names the panels
        finetuned_model="results/{scene}/finetuned/model.pt",
        compared=compared_models("finetuned"),  # each adds its panels
    output:
        report(
            "results/{scene}/comparison.png",
            caption="../report/comparison.rst",
            category="Figures",
            subcategory="{scene}",
            labels={"scene": "{scene}", "figure": "comparison"},
        ),
    log:
        "logs/{scene}/comparison_figure.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        settings=settings("evaluate"),
    script:
        "../scripts/comparison_figure.py"


rule curves:
    input:
        unpack(compared_histories),
        teacher="results/{scene}/teacher/history.csv",
        student="results/{scene}/student/history.csv",
        finetuned="results/{scene}/finetuned/history.csv",
        student_model="results/{scene}/student/model.pt",  # their student family names the legend entries
        finetuned_model="results/{scene}/finetuned/model.pt",
    output:
        report(
            "results/{scene}/curves.png",
            caption="../report/curves.rst",
            category="Figures",
            subcategory="{scene}",
            labels={"scene": "{scene}", "figure": "curves"},
        ),
    log:
        "logs/{scene}/curves.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    script:
        "../scripts/curves.py"


rule video:
    input:
        scene=scene_dir,
        model="results/{scene}/finetuned/model.pt",
    output:
        report(
            VIDEO,
            caption="../report/video.rst",
            category="Videos",
            subcategory="{scene}",
            labels={"scene": "{scene}", "figure": "video"},
        ),
    log:
        "logs/{scene}/video.log",
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("video")
    resources:
        **job_resources("video"),
    params:
        settings=settings("evaluate"),
    script:
        "../scripts/video.py"


rule summary:
    input:
        expand("results/{scene}/metrics.csv", scene=RUN_SCENES),
    output:
        csv="results/summary.csv",
        md=report(
            "results/summary.md",
            caption="../report/summary.rst",
            category="Tables",
            subcategory="All scenes",
            labels={"scene": "all", "figure": "summary"},
        ),
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        paper_scene=paper_scenes,
    script:
        "../scripts/summary.py"
