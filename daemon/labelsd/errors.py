"""Named errors. Each message says what happened and what to do; the CLI and the
service print it as one line (exit 1) and log the traceback only at debug level."""


class LabelsError(Exception):
    """Base of every error a user should see as one line rather than a traceback."""


class ConfigError(LabelsError):
    """The configuration file or a setting is invalid."""


class StoreUnavailable(LabelsError):
    """The database cannot be opened or written (locked, full, unreachable): an
    outage that waiting can cure."""


class StoreRejected(LabelsError):
    """The database refused a statement that no retry can cure (a value out of
    range or too long, too many bound values): the data is at fault, not the
    database (store/faults.py tells the two apart)."""


class NotTracked(LabelsError):
    """A path the store does not know (or would never track)."""


class WeightsUnavailable(LabelsError):
    """No InceptionV3 weights could be loaded."""


class DeviceUnavailable(LabelsError):
    """The requested compute device (e.g. --device gpu) is not present."""


class ImageError(LabelsError):
    """An image cannot be decoded; the message is the reason stored on that image."""


class ConversionFailed(LabelsError):
    """The model could not be converted to a .tflite for LiteRT (the service then keeps TensorFlow)."""


class SidecarError(LabelsError):
    """An XMP sidecar cannot be read or written (read-only folder, a sidecar exiv2
    cannot parse); the photo itself is unaffected."""


class SidecarFolderReadOnly(SidecarError):
    """A folder where no sidecar can be written (read-only mount, ProtectSystem=strict)."""


class ServeError(LabelsError):
    """`labels serve` cannot start (the address is in use, or not one of this machine's)."""


class UnknownLabel(LabelsError):
    """A label name that is no ImageNet class; the message suggests the nearest ones."""


class JudgementRefused(LabelsError):
    """A reject, unreject, confirm or unconfirm that cannot be done as asked; nothing
    was changed (store/judgements.py). One of the three below."""


class LabelNotCarried(JudgementRefused):
    """The photo does not carry the label (it is not among its top 3)."""


class AlreadyJudged(JudgementRefused):
    """The label is already rejected (or confirmed) on the photo."""


class NotJudged(JudgementRefused):
    """Unreject (unconfirm) of a label that was never rejected (confirmed) on the photo."""


class NotEmbeddedYet(LabelsError):
    """A photo (or the library) has no embedding of the model yet: the service makes
    them when idle. Not a mistake of the user's: try again later (exit status 75,
    EX_TEMPFAIL)."""

    exit_status = 75
