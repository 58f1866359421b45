"""The Keras model: `network` builds, loads (safe mode only) and checks MobileNetV2 classifiers; `scoring` runs
one over labelled images through the one preprocessing path.  TensorFlow only inside functions.  Below
`calibrate` and `train` because both score models; the TF-free readers of what a run stored are in
`wbc_edge.data.run_files`.
"""
