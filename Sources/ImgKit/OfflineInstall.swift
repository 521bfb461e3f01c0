import Glibc
import ImgFormats
import ImgSystem
import Logging

/// install-grub's offline strategy: the image is changed as the file it is, with no root, no loop
/// device, no mount and no VM. GRUB's own grub-mkimage builds core.img and the EFI images; GRUB's
/// files go into the boot filesystem through libext2fs (`Ext2Writer`) or, on the EFI system
/// partition, mtools (`MtoolsWriter`); boot.img and core.img are placed as grub-bios-setup places
/// them (`GrubBIOSSetup`). What it writes is what grub-install writes (the differential tests
/// compare).
///
/// Everything is written into a copy of the image (`WorkingCopy`) that replaces it in one rename
/// at the end: libext2fs writes without the filesystem's journal, FAT has none, and no order of
/// the writes keeps a filesystem consistent at every instant, so a kill must find the image as
/// it was. The cost is a copy of the image's data where its filesystem cannot clone (measured in
/// the README). A block device, and `Create`'s unfinished image, are written in place
/// (`OfflineTarget`).
enum OfflineInstall {
    /// Installs `plan` into its image. `session` gives the id that names the copy for the instant
    /// of its rename, and the interruption checked between steps.
    static func run(_ plan: InstallPlan, options: InstallGrub.Options, session: Session) throws(InstallGrubError) {
        guard InstallPlan.isExt(plan.bootFilesystem) || plan.bootFilesystem.type == "vfat" else {
            throw .strategyUnavailable(.offline, reason: "/boot on partition \(plan.bootPartition.number) is \(plan.bootFilesystem.type), and the offline strategy writes GRUB's files into ext2, ext3, ext4 or FAT only; run as root for a loop strategy, on a kernel that can mount it")
        }
        if plan.secureBoot, plan.bootFilesystem.uuid == nil {
            throw .strategyUnavailable(.offline, reason: "the boot filesystem on partition \(plan.bootPartition.number) has no UUID for the Secure Boot loader to find it by")
        }
        do {
            let target = try OfflineTarget(for: plan.image, inPlace: options.writesInPlace)
            switch target {
            case .copy(let copy):
                session.logger.info(copy.cloned ? "cloned \(plan.image) (shared blocks)" : "copied \(plan.image)'s \(copy.copiedBytes) bytes of data")
            case .inPlace:
                session.logger.info(options.writesInPlace ? "writing \(plan.image) in place" : "\(plan.image) is a block device: writing it in place")
            }
            try session.checkpoint()

            let boot = plan.embedding == nil ? nil : try readFile(bootImage)
            let core = try writeBootFiles(plan, options: options, bootImage: boot, into: target, session: session)
            try session.checkpoint()

            if let embedding = plan.embedding, let boot, let core {
                let placement = try GrubBIOSSetup.place(bootImage: boot, coreImage: core, area: embedding, disk: target.source())
                for write in placement.writes { try writeFully(target.fd, Array(write.bytes), at: write.offset, path: target.path) }
                session.logger.info("boot.img in sector 0, core.img in \(placement.sectors.count) sectors from \(placement.sectors.first ?? 0) (\(placement.redundancyBytes) bytes of Reed-Solomon redundancy)")
                try session.checkpoint()
            }
            try session.step("replace the image")
            try target.finish(tag: session.id)
        } catch {
            throw InstallGrubError(wrapping: error)
        }
    }

    static let bootImage = GrubTarget.i386PC.moduleDirectory + "/boot.img"

    /// Writes grub/ into the boot filesystem of `target` (GRUB's files for each of the plan's
    /// targets, boot.img and core.img for BIOS, core.efi and grub.efi for UEFI, and grubenv where
    /// there is none), then GRUB's loader into the ESP's /EFI/BOOT. Returns core.img for BIOS.
    private static func writeBootFiles(_ plan: InstallPlan, options: InstallGrub.Options, bootImage: [UInt8]?,
                                       into target: OfflineTarget, session: Session) throws -> [UInt8]? {
        let sectorSize = UInt64(plan.table.sectorSize)
        let esp = plan.esp.map {
            MtoolsWriter(target, offset: $0.startSector * sectorSize, length: $0.sectorCount * sectorSize,
                         time: options.recordedTime, session: session)
        }
        let bootStart = plan.bootPartition.startSector * sectorSize
        let writer: GrubDirectoryWriter
        if plan.bootOnESP, let esp {
            writer = esp
        } else if plan.bootFilesystem.type == "vfat" {
            writer = MtoolsWriter(target, offset: bootStart, length: plan.bootPartition.sectorCount * sectorSize,
                                  time: options.recordedTime, session: session)
        } else {
            writer = try options.recordedTime.map { try Ext2Writer(image: target.path, offset: bootStart, time: UInt32(clamping: $0)) }
                ?? Ext2Writer(image: target.path, offset: bootStart)
        }
        // On the ESP always /boot/grub, as the loop strategies copy it there.
        let grubDirectory = plan.bootOnESP ? "/boot/grub" : try writer.grubDirectory()
        let partition = "(,\(plan.table.kind.grubModule.dropFirst("part_".count))\(plan.bootPartition.number))"
        let modules = [plan.grubFilesystemModule, plan.table.kind.grubModule]
        // grub-mkimage runs while GRUB's other files are written (two of this install's steps at once).
        let pendingCore = bootImage == nil ? nil
            : try PendingImage(.i386PC, prefix: partition + grubDirectory, modules: options.modules + modules + ["biosdisk"])
        let pendingEFI = plan.esp == nil ? nil
            : try PendingEFIImages(plan, prefix: partition + grubDirectory, grubDirectory: grubDirectory, modules: modules, extra: options.modules)
        try session.step("write GRUB's files")

        let targets = plan.firmware.targets
        for directory in [""] + targets.map({ "/\($0.rawValue)" }) + ["/fonts", "/locale"] {
            try writer.makeDirectory(grubDirectory + directory)
        }
        for target in targets { try writer.copy(GrubFiles.platform(target), into: grubDirectory) }
        try writer.copy(GrubFiles.shared(), into: grubDirectory)
        var core: [UInt8]?
        if let pendingCore, let bootImage {
            try writer.write("\(grubDirectory)/i386-pc/boot.img", bytes: bootImage)
            core = try pendingCore.result()
            try writer.write("\(grubDirectory)/i386-pc/core.img", bytes: core!)
        }
        let efi = try pendingEFI?.result()
        if let efi {
            let directory = "\(grubDirectory)/\(GrubTarget.x86_64EFI.rawValue)"
            if let config = efi.config { try writer.write("\(directory)/load.cfg", bytes: config) }
            try writer.write("\(directory)/core.efi", bytes: efi.core)
            try writer.write("\(directory)/grub.efi", bytes: efi.grub)
        }
        if try !writer.exists("\(grubDirectory)/grubenv") {
            try writer.write("\(grubDirectory)/grubenv", bytes: GrubFiles.environmentBlock)
        }
        try writer.finish()
        session.logger.info("wrote GRUB's \(targets.map(\.rawValue).joined(separator: " and ")) files, font and translations into \(grubDirectory) of partition \(plan.bootPartition.number)")

        if let esp, let efi, let number = plan.esp?.number {
            try session.step("write the EFI system partition")
            try esp.makeDirectory("/EFI/BOOT")
            if plan.secureBoot {
                try esp.copy(GrubFiles.secureBootLoaders(), into: "/EFI/BOOT")
                try esp.write("/EFI/BOOT/grub.cfg", bytes: GrubFiles.secureBootStub(uuid: plan.bootFilesystem.uuid!, grubDirectory: grubDirectory))
            } else {
                try esp.write("/EFI/BOOT/BOOTX64.EFI", bytes: efi.core)
            }
            session.logger.info("wrote \(plan.secureBoot ? "shim, the signed GRUB and its grub.cfg" : "GRUB's EFI image") into /EFI/BOOT of partition \(number)")
        }
        return core
    }
}

/// The EFI images grub-install builds, each by grub-mkimage in the background: core.efi, the
/// removable path's loader, and grub.efi, the same without a prefix (for network boot). For
/// Secure Boot both carry a configuration that finds the boot filesystem by UUID (load.cfg),
/// with a prefix relative to it.
private struct PendingEFIImages {
    let core: PendingImage, grub: PendingImage
    let config: [UInt8]?

    /// The images for `plan`: `prefix` is GRUB's directory with its partition ("(,gpt2)/boot/grub"),
    /// `modules` the filesystem's and the partition map's, `extra` the caller's (--modules), which
    /// grub-install puts before its own (it collects them as it parses its arguments).
    init(_ plan: InstallPlan, prefix: String, grubDirectory: String, modules: [String], extra: [String]) throws(InstallGrubError) {
        if plan.secureBoot, let uuid = plan.bootFilesystem.uuid {
            let config = GrubFiles.searchConfig(uuid: uuid, grubDirectory: grubDirectory)
            let modules = extra + modules + ["search_fs_uuid"]
            core = try PendingImage(.x86_64EFI, prefix: grubDirectory, modules: modules, config: config)
            grub = try PendingImage(.x86_64EFI, prefix: "", modules: modules, config: config)
            self.config = config
        } else {
            core = try PendingImage(.x86_64EFI, prefix: prefix, modules: extra + modules)
            grub = try PendingImage(.x86_64EFI, prefix: "", modules: extra + modules)
            config = nil
        }
    }

    /// Waits for both.
    func result() throws(InstallGrubError) -> (core: [UInt8], grub: [UInt8], config: [UInt8]?) {
        (try core.result(), try grub.result(), config)
    }
}
