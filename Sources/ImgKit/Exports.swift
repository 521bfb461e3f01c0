// Types an embedder names besides ImgKit's own, re-exported so that `import ImgKit` is enough:
// the logger every workflow takes, and how a caller stops one (an Interruption, which a
// SignalTrap fills from SIGINT, SIGTERM and SIGHUP).
@_exported import struct Logging.Logger
@_exported import class ImgSystem.Interruption
@_exported import class ImgSystem.SignalTrap
// The values reports are made of, defined by the formats layer.
@_exported import struct ImgFormats.Finding
@_exported import struct ImgFormats.BootCode
@_exported import struct ImgFormats.SectorRange
@_exported import struct ImgFormats.GUID
@_exported import struct ImgFormats.PEImage
