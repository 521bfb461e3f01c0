// swift-tools-version:6.0
import PackageDescription

// Layers (see DESIGN.md): ImgFormats (pure bytes) and ImgSystem (kernel objects) know nothing of
// each other; ImgKit composes them into workflows; the imgtool executable only parses arguments.
let package = Package(
    name: "imgtool",
    products: [
        .library(name: "ImgKit", targets: ["ImgKit"]),
        .executable(name: "imgtool", targets: ["imgtool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(name: "CLinuxShim"),
        .systemLibrary(name: "CBlkid", pkgConfig: "blkid", providers: [.apt(["libblkid-dev"])]),
        .systemLibrary(name: "CExt2fs", pkgConfig: "ext2fs", providers: [.apt(["libext2fs-dev"])]),
        .target(name: "CExt2fsFdIO", dependencies: ["CExt2fs"]),
        // liblzma decodes GRUB's core.img: pure computation, so the formats layer may use it.
        .systemLibrary(name: "CLzma", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        // libdevmapper, static, built from Debian's lvm2 source into .build/deps by
        // Scripts/build-libdevmapper.sh (`make deps-build`); swift finds it through
        // PKG_CONFIG_PATH=.build/deps/lib/pkgconfig, which the Makefile sets. Debian ships no .a.
        .systemLibrary(name: "CDevMapper", pkgConfig: "imgtool-devmapper"),
        // libdm's variadic log callback, formatted in C for a Swift function pointer.
        .target(name: "CDevMapperShim", dependencies: ["CDevMapper"]),
        .target(name: "ImgFormats", dependencies: ["CLzma"]),
        .target(
            name: "ImgSystem",
            dependencies: ["CLinuxShim", "CBlkid", "CExt2fs", "CExt2fsFdIO", "CDevMapper", "CDevMapperShim",
                           .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "ImgKit",
            dependencies: ["ImgFormats", "ImgSystem", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "imgtool",
            dependencies: ["ImgKit", .product(name: "Logging", package: "swift-log")]),
        // Helpers the tests share: the image scripts, qemu boots, running the CLI, leak checks.
        .target(name: "TestSupport", dependencies: ["ImgSystem"], path: "Tests/TestSupport"),
        // Runs inside IsolatedVM's throwaway VM, whose kernel has device mapper, for
        // ImgKitTests' DeviceMapperVMTests: the host kernel here has none.
        .executableTarget(
            name: "DeviceMapperProbe",
            dependencies: ["ImgKit", "ImgFormats", "ImgSystem", .product(name: "Logging", package: "swift-log")],
            path: "Tests/DeviceMapperProbe"),
        .testTarget(name: "ImgFormatsTests", dependencies: ["ImgFormats", "TestSupport"]),
        .testTarget(
            name: "ImgSystemTests",
            dependencies: ["ImgSystem", "ImgFormats", "TestSupport", "CDevMapper", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "ImgKitTests",
            dependencies: ["ImgKit", "ImgFormats", "ImgSystem", "TestSupport", .product(name: "Logging", package: "swift-log")]),
    ],
    swiftLanguageModes: [.v6]
)
