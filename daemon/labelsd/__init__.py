"""labelsd: watch folders of photos, label each image with InceptionV3, query the labels."""

__version__ = "0.1.0"
