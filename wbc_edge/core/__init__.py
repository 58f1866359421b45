"""Core: what every stage - and the runtime a Raspberry Pi installs alone - stands on.  No TensorFlow at import
(`tfcompat` imports it inside its function, for the stages that need it), numpy + Pillow at most.

- `errors`       WbcEdgeError and its one-line kinds (bad image, dataset, model file)
- `atomic`       temp file + fsync + rename: no half-written artifact
- `labels`       the class list (read from the data; WBC5 only as the fallback for old models)
- `preprocess`   the one path from an image file to the pixels every model is fed (DEFAULT_SIZE: the one
                 default input size)
- `scale_guard`  magnify small cells before the model (fitted per run, carried in the contract)
- `calibration`  temperature scaling, ECE, the abstain threshold (the runtime applies them)
- `contract`     the JSON + labels appended to every .tflite: what the runtime needs to feed and read it
- `progress`     the one progress/logging interface; `quiet` keeps native start-up noise off the console
- `tfcompat`     import_tf(): TensorFlow + tf_keras, imported on first use
"""
