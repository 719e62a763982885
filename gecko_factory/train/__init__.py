"""Fine-tuning an embedding model on FRet data with Gecko's loss.

model.py (DualEncoder + input format), loss.py, data.py (run folders -> batches), train.py (the
loop). Nothing is re-exported here: `train` the function would shadow `train` the module.
"""
