import Glibc
import ImgFormats
import ImgSystem
import Logging

/// install-grub's offline strategy: the image is changed as the file it is, with no root, no loop
/// device, no mount and no VM. GRUB's own grub-mkimage builds core.img; GRUB's files go into the
/// boot filesystem through libext2fs (`Ext2Writer`); boot.img and core.img are placed as
/// grub-bios-setup places them (`GrubBIOSSetup`).
///
/// Everything is written into a copy of the image (`WorkingCopy`) that replaces it in one rename
/// at the end: libext2fs writes without the filesystem's journal, and no order of its writes keeps
/// the filesystem consistent at every instant, so a kill must find the image as it was. The cost
/// is a copy of the image's data where its filesystem cannot clone (measured in the README).
enum OfflineInstall {
    /// Installs `plan` for BIOS into its image. `session` gives the id that names the copy for the
    /// instant of its rename, and the interruption checked between steps.
    static func run(_ plan: InstallPlan, options: InstallGrub.Options, session: Session) throws(InstallGrubError) {
        guard plan.firmware == .bios else {
            throw .strategyUnavailable(.offline, reason: "the offline strategy installs for BIOS only so far; \(plan.firmware.rawValue) installs need root (a loop strategy) or --isolate")
        }
        guard let embedding = plan.embedding else { throw .noPostMBRGap(path: plan.image, firstPartitionStart: 0) }
        do {
            let copy = try WorkingCopy(of: plan.image)
            session.logger.info(copy.cloned ? "cloned \(plan.image) (shared blocks)" : "copied \(plan.image)'s \(copy.copiedBytes) bytes of data")
            try session.checkpoint()

            let boot = try readFile(bootImage)
            let core = try writeBootFiles(plan, options: options, bootImage: boot, into: copy, session: session)
            try session.checkpoint()

            let disk = try FileByteSource(path: copy.path)
            let placement = try GrubBIOSSetup.place(bootImage: boot, coreImage: core,
                                                    area: embedding, disk: disk)
            for write in placement.writes { try writeFully(copy.file.fd, Array(write.bytes), at: write.offset, path: copy.path) }
            session.logger.info("boot.img in sector 0, core.img in \(placement.sectors.count) sectors from \(placement.sectors.first ?? 0) (\(placement.redundancyBytes) bytes of Reed-Solomon redundancy)")
            try session.checkpoint()
            try session.step("replace the image")
            try copy.commit(tag: session.id)
        } catch {
            throw InstallGrubError(wrapping: error)
        }
    }

    static let bootImage = GrubTarget.i386PC.moduleDirectory + "/boot.img"

    /// Writes grub/ into the boot filesystem of `copy`: GRUB's files, `bootImage`, a freshly built
    /// core.img, and grubenv where there is none; everything owned by root, directories 0755 and
    /// files 0644, as grub-install run by root leaves them. Returns core.img.
    private static func writeBootFiles(_ plan: InstallPlan, options: InstallGrub.Options, bootImage: [UInt8],
                                       into copy: WorkingCopy, session: Session) throws -> [UInt8] {
        let offset = plan.bootPartition.startSector * UInt64(plan.table.sectorSize)
        let writer = try Ext2Writer(image: copy.path, offset: offset)
        // A separate /boot holds grub/ at its top and no boot/ (as BootDirectory.prepare decides).
        let separateBoot = try writer.kind(of: "/grub") == .directory && writer.kind(of: "/boot") == nil
        let grubDirectory = separateBoot ? "/grub" : "/boot/grub"
        let partition = "\(plan.table.kind.grubModule.dropFirst("part_".count))\(plan.bootPartition.number)"
        let modules = [plan.grubFilesystemModule, plan.table.kind.grubModule, "biosdisk"] + options.modules
        // grub-mkimage runs while GRUB's other files are written (two of this install's steps at once).
        let pendingCore = try PendingImage(.i386PC, prefix: "(,\(partition))\(grubDirectory)", modules: modules)
        try session.step("write GRUB's files")

        for directory in ["", "/i386-pc", "/fonts", "/locale"] { try writer.makeDirectories(grubDirectory + directory) }
        for file in GrubFiles.platform(.i386PC) + GrubFiles.shared() {
            try writer.writeFile("\(grubDirectory)/\(file.destination)", contents: try readFile(file.source))
        }
        try writer.writeFile("\(grubDirectory)/i386-pc/boot.img", contents: bootImage)
        let core = try pendingCore.result()
        try writer.writeFile("\(grubDirectory)/i386-pc/core.img", contents: core)
        if try writer.kind(of: "\(grubDirectory)/grubenv") == nil {
            try writer.writeFile("\(grubDirectory)/grubenv", contents: GrubFiles.environmentBlock)
        }
        try writer.close()
        session.logger.info("wrote GRUB's i386-pc files, font and translations into \(grubDirectory) of partition \(plan.bootPartition.number)")
        return core
    }
}
