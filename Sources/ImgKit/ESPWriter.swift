import Glibc
import ImgSystem

/// Writes GRUB's UEFI files into the EFI system partition without mounting it (this kernel has no
/// vfat), merging into what is there (other loaders stay) and overwriting GRUB's own files.
///
/// FAT has no journal, and mtools writing into the partition leaves lost clusters when it is
/// killed (measured: a kill 2 to 15 ms into mcopy makes `fsck.fat -n` fail). So mtools writes into
/// a copy of the partition (`StagedRegion`), and only the blocks that differ are written into the
/// image, after their old contents are saved in an undo file the session's journal names
/// (`UndoFile`). A run that fails while writing them puts the old blocks back itself; one that is
/// killed leaves that to `imgtool cleanup` or to the next install-grub on the image.
enum ESPWriter {
    /// Copies `staging`'s EFI directory (and, when /boot/grub lives on the ESP, its boot
    /// directory, without the device.map meant for grub-install only) into `plan`'s ESP, written
    /// through `device`, its node. Wraps mcopy(1) and mdel(1).
    static func copy(staging: String, plan: InstallPlan, to device: String, session: Session) throws {
        guard let esp = plan.esp else { return }
        let sectorSize = UInt64(plan.table.sectorSize)
        let region = try StagedRegion(image: plan.image, offset: esp.startSector * sectorSize, length: esp.sectorCount * sectorSize)
        let sources = [staging + "/EFI"] + (plan.bootOnESP ? [staging + "/boot"] : [])
        try session.step("mcopy")
        try MtoolsWriter.run("mcopy", ["-s", "-o", "-i", region.path] + sources + ["::/"], session: session)
        if plan.bootOnESP, BootDirectory.exists(staging + "/boot/grub/device.map") {
            try MtoolsWriter.run("mdel", ["-i", region.path, "::/boot/grub/device.map"], session: session)
        }
        // Through the device, as everything else is written: its page cache then holds no stale block.
        let target = try FileHandle(path: device, flags: O_RDWR)
        let changes = try region.changes(against: target, base: 0)
        try write(changes, to: target, region: region, session: session)
        session.logger.info("copied \(sources.map { String($0.dropFirst(staging.count)) }.joined(separator: " and ")) into \(device): \(changes.count) blocks of \(StagedRegion.blockSize) bytes changed")
    }

    /// Saves the old contents of `changes` in an undo file, writes the new ones through `target`,
    /// fsyncs, and drops the undo file. Wraps pwrite(2) and fsync(2).
    private static func write(_ changes: [StagedRegion.Change], to target: FileHandle, region: StagedRegion,
                              session: Session) throws {
        guard !changes.isEmpty else { return }
        try session.step("ESP write")
        let undoPath = SessionJournal.directory + "/\(session.id)-esp.undo"
        let resource = "undo file \(undoPath)"
        try session.acquiring(.undo, undoPath)
        var undo: UndoFile?
        var durable = false
        session.onClose(resource, journal: .init(.undo, undoPath)) {
            if !durable, let undo { try undo.restore(fd: target.fd, base: 0, name: target.path) }
            try UndoFile.remove(undoPath)
        }
        undo = try UndoFile.create(at: undoPath, image: region.image, imageOffset: region.offset,
                                   blocks: changes.map { .init(offset: $0.offset, bytes: $0.old) })
        for (i, change) in changes.enumerated() {
            // A step halfway, so that fault injection can stop a write that has begun.
            if i == changes.count / 2 { try session.step("ESP write, halfway") }
            try writeFully(target.fd, change.new, at: change.offset, path: target.path)
        }
        try systemCall("fsync", on: target.path) { fsync(target.fd) }
        durable = true
        try session.release(resource)
    }
}
