"""The model boundary: what turns decoded pixels into top-3 ImageNet labels.

`classifier.Classifier` is the one type the pipeline, `labels scan` and the
benchmark depend on (name, input size, batch size and its ladder, decode with
the model's preprocessing, top-3); `load_classifier(model=...)` builds one.
`spec.ModelSpec` declares a model and `registry` names them (`--model`): each
model's constants (input size, preprocessing, weights files) live in its own
module (`inception`, `efficientnet`) behind the spec. A `spec.Runtime` runs the
forward pass (`keras_runtime` today), on the device chosen in `device`.
`decode` opens and decodes image files, `weights` finds and checks InceptionV3's
weights files, `taxonomy` maps ImageNet classes to WordNet. It may import
`labelsd.records`, `labelsd.errors` and `labelsd.config`; TensorFlow is
imported lazily, inside the runtime only.
"""
