"""The model boundary: what turns decoded pixels into top-3 ImageNet labels.

`classifier` declares the classifier type the pipeline and `labels scan` depend
on (name, input size, batch size and its ladder, preprocessing, top-3) and the
registry of models; each model's constants (input size, preprocessing, weights
files) live behind it. `decode` opens and decodes image files, `weights` finds
and checks weights files, `taxonomy` maps ImageNet classes to WordNet. It may
import `labelsd.records`, `labelsd.errors` and `labelsd.config`; TensorFlow is
imported lazily, inside the classifier only.
"""
