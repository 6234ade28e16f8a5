"""Photo metadata through exiv2 (python-exiv2): what a photo carries, and the XMP
sidecars labelsd writes beside it.

`exiv` loads the library once (lazily: `labels search` never pays for it) and
holds the few helpers over its API (XMP only, bounded before exiv2 sees it);
`metadata` reads the date, camera, GPS position and keywords of a photo from
the bytes the pipeline already read, and its existing sidecar, with bounds:
`blocks` finds the EXIF, IPTC and XMP blocks of a JPEG, PNG, WebP or TIFF
(`bmff`: HEIF, AVIF) and leaves out any over 1 MiB, `tiff` reads the few EXIF
fields and IPTC keywords labelsd keeps; `sidecar` merges labelsd's keywords into `NAME.EXT.xmp`
(other programs' fields are kept; a keyword a person removed is not put back);
`suppression` owns what a sidecar says a person took away (a rejected label goes
on its list; a suppressed label read back is a rejection);
`writer` is the service's listener that writes sidecars on its own thread, and
the function behind `labels xmp write` and `labels tag`. It may import
`labelsd.records`, `labelsd.errors`, `labelsd.fileio` and `labelsd.store`; the
pipeline calls `metadata`, the service and the CLI call `writer`. The image file
itself is never written: its bytes are its identity.
"""
