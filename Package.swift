// swift-tools-version:6.0
import PackageDescription

// Layers (see DESIGN.md): ImgFormats (pure bytes) knows nothing of the kernel; ImgSystem (kernel
// objects) reads bytes with it; ImgVM (throwaway qemu VMs) builds on both and knows nothing of GRUB;
// ImgKit composes them into workflows; the imgtool executable only parses arguments.
let package = Package(
    name: "imgtool",
    products: [
        .library(name: "ImgKit", targets: ["ImgKit"]),
        .executable(name: "imgtool", targets: ["imgtool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // `swift package generate-documentation --target ImgKit` (make docs): ImgKit.docc.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(name: "CLinuxShim"),
        .systemLibrary(name: "CBlkid", pkgConfig: "blkid", providers: [.apt(["libblkid-dev"])]),
        .systemLibrary(name: "CExt2fs", pkgConfig: "ext2fs", providers: [.apt(["libext2fs-dev"])]),
        .target(name: "CExt2fsFdIO", dependencies: ["CExt2fs"]),
        // liblzma decodes GRUB's core.img: pure computation, so the formats layer may use it.
        .systemLibrary(name: "CLzma", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        // libewf reads E01 acquisitions; it opens their segment files itself, so ImgSystem uses it.
        .systemLibrary(name: "CEwf", pkgConfig: "libewf", providers: [.apt(["libewf-dev"])]),
        // zlib and zstd inflate qcow2's and VMDK's compressed clusters: pure computation, like liblzma.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // The distribution's libdevmapper (libdevmapper-dev), so a package depending on ImgKit
        // builds with plain `swift build`. The CLI's static build (`make build`) links a static
        // libdevmapper.a of the same version instead: see Scripts/build-libdevmapper.sh.
        .systemLibrary(name: "CDevMapper", pkgConfig: "devmapper", providers: [.apt(["libdevmapper-dev"])]),
        // libdm's variadic log callback, formatted in C for a Swift function pointer.
        .target(name: "CDevMapperShim", dependencies: ["CDevMapper"]),
        // libparted writes the partition tables `imgtool create` makes (no hand-written table writer).
        .systemLibrary(name: "CParted", pkgConfig: "libparted", providers: [.apt(["libparted-dev"])]),
        // libarchive reads the tar archives `imgtool create` fills filesystems from, owners and all.
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .target(name: "ImgFormats", dependencies: ["CLzma", "CZlib", "CZstd"]),
        .target(
            name: "ImgSystem",
            dependencies: ["ImgFormats", "CLinuxShim", "CBlkid", "CExt2fs", "CExt2fsFdIO", "CDevMapper", "CDevMapperShim", "CEwf", "CParted", "CArchive",
                           .product(name: "Logging", package: "swift-log")]),
        // Throwaway VMs: qemu's process, its QMP monitor, initramfs assembly, saved VMs, boot screens.
        .target(
            name: "ImgVM",
            dependencies: ["ImgFormats", "ImgSystem", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "ImgKit",
            dependencies: ["ImgFormats", "ImgSystem", "ImgVM", .product(name: "Logging", package: "swift-log")]),
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
            name: "ImgVMTests",
            dependencies: ["ImgVM", "ImgSystem", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "ImgKitTests",
            dependencies: ["ImgKit", "ImgFormats", "ImgSystem", "ImgVM", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        // The CLI's own table (@testable import of the executable) against the man page and the
        // completions it generates.
        // The CLI's integration tests: they run the imgtool executable as scripts do (and the
        // generators of its man page and completions through @testable import).
        .testTarget(
            name: "ImgtoolTests",
            dependencies: ["imgtool", "ImgKit", "ImgFormats", "ImgSystem", "TestSupport",
                           .product(name: "Logging", package: "swift-log")]),
    ],
    swiftLanguageModes: [.v6]
)
