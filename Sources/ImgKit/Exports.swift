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
@_exported import struct ImgFormats.DiskContainer
@_exported import struct ImgFormats.LVMPhysicalVolume
@_exported import struct ImgFormats.LUKSHeader
// The throwaway VMs: `Isolation.vm` is an `IsolatedVM.Options` (whose machine and result's
// accelerator are KernelVM's), verify's boot check a `QemuBoot` run with a `BootObservation`, which
// `BootScreen` classifies. ImgVM's other parts are `package`: ImgKit's to use, not an embedder's.
@_exported import enum ImgVM.IsolatedVM
@_exported import enum ImgVM.KernelVM
@_exported import enum ImgVM.QemuBoot
@_exported import struct ImgVM.BootObservation
@_exported import enum ImgVM.BootScreen
// The JSON document every report prints and is coded as (a parser of untrusted bytes: it reads what
// an isolated VM sends back, so it lives in the formats layer and is fuzzed).
@_exported import enum ImgFormats.JSONValue
@_exported import protocol ImgFormats.JSONRepresentable
