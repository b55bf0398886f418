"""What the stages share; no entry points here (those are the modules of ``stages``, one per stage).

    params        params.yaml read as DVC reads it (YAML 1.2) into a stage's checked dataclass
    common        the CLI wrapper, logging, input checks, all-or-nothing outputs (light: no torch)
    training      the training stages' one skeleton (finetune, pretrain): flags, params, distributed
                  setup, resumption, fit, outputs
    allocator     tcmalloc for the training stages (re-executes the process, BERT_ALLOCATOR)
    tasks         the task names the pipeline accepts (bert.tasks' table and the built-in demo tasks)
    sources       where the official task files are downloaded from, with their checksums
    builtin_data  the generated offline demo tasks
    search        params.yaml's search grid and the one place trials (task, seed, setting) are named
    choice        the report's rule: the setting with the best mean over seeds, then its best seed
    figures, render, references   the report's plots, Markdown/HTML and published figures
"""
