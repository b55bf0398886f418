"""The pipeline's stages, one module per stage, each a small CLI: ``python -m stages.<name>``.

    download  convert  tokenize  finetune  evaluate  report           (dvc.yaml)
    builtin_corpus  pretrain_data  pretrain                          (pretrain/dvc.yaml)

No stage imports another; what they share is in the private package ``stages._lib``.
"""
