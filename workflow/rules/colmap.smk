# Photos scenes: COLMAP (via pycolmap, CPU) poses the user's photos and writes an LLFF or Blender scene
# folder into resources/scenes/{scene}, which every later stage reads like a downloaded scene.


rule colmap:
    input:
        photos=photos_dir,
        images=photo_files,
    output:
        directory("resources/scenes/{scene}"),
    log:
        "logs/{scene}/colmap.log",
    benchmark:
        "benchmarks/{scene}/colmap.tsv"
    wildcard_constraints:
        scene=PHOTO_SCENES,
    conda:
        "../envs/r2l.yaml"
    threads: job_threads("colmap")
    resources:
        **job_resources("colmap"),
    params:
        settings=colmap_settings,
    script:
        "../scripts/colmap.py"
