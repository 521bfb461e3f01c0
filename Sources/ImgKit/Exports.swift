// Embedders use ImgKit alone: its API carries ImgVM's types (`Isolation.vm` is an
// `IsolatedVM.Options`, verify's boot check a `BootObservation`), so ImgVM's public API comes with it.
// What ImgVM keeps to itself and ImgKit is `package`, and does not come along.
@_exported import ImgVM
