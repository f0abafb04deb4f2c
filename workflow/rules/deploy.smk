# Stage 5 (deploy: section, off by default): each finetuned student as an ONNX file checked against torch, the
# scene's static browser viewer, and a screenshot of it for the report.


rule export:
    input:
        model="results/{scene}/finetuned{extra}/model.pt",
    output:
        onnx="results/{scene}/export{extra}/model.onnx",
        check="results/{scene}/export{extra}/check.json",
    log:
        "logs/{scene}/export{extra}.log",
    benchmark:
        "benchmarks/{scene}/export{extra}.tsv"
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        fp16=config["deploy"]["fp16"],
    script:
        "../scripts/export.py"


rule viewer:
    input:
        onnx="results/{scene}/export/model.onnx",
    output:
        directory("results/{scene}/viewer"),
    log:
        "logs/{scene}/viewer.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    params:
        npm_cache="resources/npm",
    script:
        "../scripts/viewer.py"


rule viewer_screenshot:
    input:
        "results/{scene}/viewer",
    output:
        report(
            "results/{scene}/viewer.png",
            caption="../report/viewer.rst",
            category="Figures",
            subcategory="{scene}",
            labels={"scene": "{scene}", "figure": "viewer"},
        ),
    log:
        "logs/{scene}/viewer_screenshot.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    script:
        "../scripts/viewer_screenshot.py"


rule deploy_summary:
    input:
        deploy_checks,
    output:
        csv="results/deploy.csv",
        md=report(
            "results/deploy.md",
            caption="../report/deploy.rst",
            category="Tables",
            subcategory="All scenes",
            labels={"scene": "all", "figure": "deploy"},
        ),
    log:
        "logs/deploy_summary.log",
    localrule: True
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("light")
    resources:
        **job_resources("light"),
    script:
        "../scripts/deploy_summary.py"
