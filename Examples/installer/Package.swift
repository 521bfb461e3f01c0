// swift-tools-version:6.0
import PackageDescription

// An installer that embeds ImgKit the way any package would: a path dependency on the imgtool
// checkout (a URL and a version in a real project), plain `swift build`.
let package = Package(
    name: "installer",
    dependencies: [
        .package(name: "imgtool", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "installer", dependencies: [.product(name: "ImgKit", package: "imgtool")]),
        // An appliance builder's image step: a layout as Swift values, made through libparted.
        .executableTarget(name: "builder", dependencies: [.product(name: "ImgKit", package: "imgtool")]),
    ],
    swiftLanguageModes: [.v6]
)
