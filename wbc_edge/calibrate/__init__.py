"""Calibration of a trained run, fitted after training and stored with it: the confidence temperature and abstain
threshold, the scale guard, and the feature distance (`feature_distance`: how far images lie from the training
data).  `confidence` fits them (TensorFlow for the Keras passes); train calls it at the end of every run,
`wbc-edge calibrate` for older runs; export copies the results into every contract.
"""
