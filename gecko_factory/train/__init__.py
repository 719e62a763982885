"""Fine-tuning an embedding model on FRet data with Gecko's loss and/or the judge distilled.

config.py (every option: TrainConfig), model.py (DualEncoder + input format + the losses),
data.py (run folders -> batches, with the judged candidates when distilling), train.py (the
loop), select.py (dev evaluation and the best state), checkpoint.py, card.py (the model's
README). Nothing is re-exported here: `train` the function would shadow `train` the module.
"""
