import ImgFormats
import ImgSystem

/// Whether an image boots on UEFI firmware (x86-64), from its bytes: the EFI system partition, the
/// FAT filesystem on it, the removable-media loader \EFI\BOOT\BOOTX64.EFI, its PE header, and for
/// GRUB the modules, prefix and config in its "mods" section and what they need from the image.
extension Verify {
    /// The path firmware boots from a disk it has no boot entry for, which is every disk image.
    static let removableLoader = "/EFI/BOOT/BOOTX64.EFI"
    /// Loaders larger than this are refused unread; GRUB's is under 2 MiB, shim's under 1 MiB.
    static let maximumLoaderBytes = 64 << 20

    /// nil when the image has no EFI system partition.
    static func checkEFI(table: PartitionTable?, source: any ByteSource, path: String) -> VerifyReport.EFI? {
        guard let table, let esp = table.partitions.first(where: { $0.typeGUID == .efiSystem || $0.mbrType == 0xEF }) else {
            return nil
        }
        var problems: [Finding] = []
        var loader: String?
        var pe: PEImage?
        var grub: GrubEFIImage?
        func report(_ bootable: Bool?) -> VerifyReport.EFI {
            VerifyReport.EFI(partition: esp.number, loader: loader, machine: pe?.machine, subsystem: pe?.subsystem,
                             grub: grub.map(VerifyReport.EFI.Grub.init), bootable: bootable, problems: problems)
        }

        let sectorSize = UInt64(table.sectorSize)
        guard let length = Inspect.boundedLength(esp, sectorSize: table.sectorSize, imageSize: source.size) else {
            problems.append(Finding(.error, "the EFI system partition \(esp.number) lies outside the image"))
            return report(false)
        }
        let fat: FATFilesystem
        let offset = esp.startSector * sectorSize
        do {
            fat = try FATFilesystem.open(source, offset: offset, length: length)
        } catch .filesystemLargerThanPartition(let bytes, let partitionBytes) {
            // Firmware reads such a filesystem as long as the files it needs lie inside the image
            // (OVMF boots it), so read it the same way: what lies past the image's end reads as
            // zeros. It is a hazard for what follows the partition, not a reason not to boot.
            guard let whole = try? FATFilesystem.open(ZeroExtended(source), offset: offset, length: bytes) else {
                problems.append(Finding(.error, "the FAT filesystem on the EFI system partition \(esp.number) claims \(bytes) bytes, more than its partition (\(partitionBytes)), and cannot be read"))
                return report(false)
            }
            problems.append(Finding(.warning, "the FAT filesystem on the EFI system partition \(esp.number) claims \(bytes) bytes but the partition has \(partitionBytes): writes to it can overwrite what follows, or fail past the image's end"))
            fat = whole
        } catch {
            problems.append(Finding(.error, "the EFI system partition \(esp.number) holds no FAT filesystem the firmware can read: \(error)"))
            return report(false)
        }
        let entry: FATFilesystem.Entry?
        do { entry = try fat.lookup(removableLoader) } catch {
            problems.append(Finding(.error, "\(removableLoader) on partition \(esp.number) cannot be read: \(error)"))
            return report(false)
        }
        guard let entry, !entry.isDirectory else {
            let others = otherLoaders(fat)
            let hint = others.isEmpty ? "" : " \(others.joined(separator: ", ")) \(others.count == 1 ? "is" : "are") there, but firmware boots one only through a boot entry in its NVRAM, which an image does not carry (grub-install --removable writes \(removableLoader))."
            problems.append(Finding(.error, "there is no \(removableLoader) on the EFI system partition \(esp.number): UEFI firmware finds nothing to boot on this disk.\(hint)"))
            return report(false)
        }
        loader = removableLoader
        let bytes: [UInt8]
        do { bytes = try fat.read(removableLoader, maxBytes: maximumLoaderBytes) } catch {
            problems.append(Finding(.error, "\(removableLoader) cannot be read: \(error)"))
            return report(false)
        }
        do { pe = try PEImage.parse(bytes) } catch {
            problems.append(Finding(.error, "\(removableLoader) is not a valid PE image (\(error)): the firmware refuses to start it"))
            return report(false)
        }
        guard let pe else { return report(false) }
        guard pe.machine == .x86_64 else {
            problems.append(Finding(.error, "\(removableLoader) is built for \(pe.machine), not x86-64: an x86-64 machine's firmware does not run it"))
            return report(false)
        }
        guard pe.subsystem == .efiApplication else {
            problems.append(Finding(.error, "\(removableLoader) is an \(pe.subsystem), not an EFI application: the firmware does not start it as a loader"))
            return report(false)
        }
        guard pe.section(named: "mods") != nil else {
            if isShim(pe) {
                problems += checkShim(fat: fat, esp: esp, table: table, source: source, path: path, grub: &grub)
                return report(problems.contains { $0.severity == .error } ? false : problems.contains { $0.severity == .info } ? nil : true)
            }
            problems.append(Finding(.info, "\(removableLoader) is a valid x86-64 EFI application but not GRUB; imgtool does not check what it loads next"))
            return report(nil)
        }
        do { grub = try GrubEFIImage.decode(pe: pe) } catch {
            problems.append(Finding(.error, "\(removableLoader) is GRUB, but its module list is damaged (\(error)): it stops before a prompt"))
            return report(false)
        }
        guard let grub else { return report(false) }
        problems += checkGrubNeeds(image: "BOOTX64.EFI", modules: grub.modules, prefix: grub.prefix, config: grub.config, platform: "x86_64-efi",
                                   loadedFrom: esp, espFAT: fat, table: table, source: source, path: path)
        return report(problems.contains { $0.severity == .error } ? false : problems.contains { $0.severity == .info } ? nil : true)
    }

    /// shim, as Debian signs it (shim-signed): its SBAT section (".sbat", CSV lines) names
    /// the component "shim".
    static func isShim(_ pe: PEImage) -> Bool {
        guard let sbat = pe.section(named: ".sbat") else { return false }
        return String(decoding: sbat.prefix { $0 != 0 }, as: UTF8.self).split(separator: "\n").contains { $0.hasPrefix("shim,") }
    }

    /// What shim starts: grubx64.efi beside it (its default second stage), a GRUB image. Debian's
    /// signed GRUB carries its modules and reads the grub.cfg beside it (`$cmdpath/grub.cfg`),
    /// which `grub-install --uefi-secure-boot` writes to search the boot filesystem by UUID and
    /// set the prefix there; that is what is checked, as for an unsigned GRUB's embedded config.
    static func checkShim(fat: FATFilesystem, esp: Partition, table: PartitionTable, source: any ByteSource, path: String,
                          grub: inout GrubEFIImage?) -> [Finding] {
        let second = "/EFI/BOOT/grubx64.efi", config = "/EFI/BOOT/grub.cfg"
        guard let bytes = try? fat.read(second, maxBytes: maximumLoaderBytes) else {
            return [Finding(.error, "\(removableLoader) is shim, which starts \(second), and there is none: it stops with an error")]
        }
        guard let pe = try? PEImage.parse(bytes), pe.machine == .x86_64, pe.subsystem == .efiApplication,
              let image = try? GrubEFIImage.decode(pe: pe) else {
            return [Finding(.info, "\(removableLoader) is shim; \(second) is not a GRUB image imgtool can read, so what it loads is not checked")]
        }
        grub = image
        guard let text = try? fat.read(config, maxBytes: 64 * 1024) else {
            return [Finding(.error, "\(removableLoader) is shim and \(second) the signed GRUB, but there is no \(config) beside it: GRUB does not find its boot filesystem and stops at a prompt")]
        }
        let cfg = String(decoding: text, as: UTF8.self)
        // `set prefix=($root)'/boot/grub'` in that file; without one, the prefix is not known.
        let prefix = cfg.split(separator: "\n").lazy.compactMap { line -> String? in
            let words = line.split(separator: " ", maxSplits: 1)
            guard words.count == 2, words[0] == "set", words[1].hasPrefix("prefix=") else { return nil }
            return String(words[1].dropFirst("prefix=".count))
        }.first
        return checkGrubNeeds(image: "grubx64.efi", modules: image.modules, prefix: prefix, config: cfg, platform: "x86_64-efi",
                              loadedFrom: esp, espFAT: fat, table: table, source: source, path: path)
    }

    /// Loaders elsewhere under /EFI (\EFI\debian\grubx64.efi, ...), for the hint when the removable
    /// path is empty.
    private static func otherLoaders(_ fat: FATFilesystem) -> [String] {
        guard let vendors = try? fat.list("/EFI") else { return [] }
        var found: [String] = []
        for vendor in vendors where vendor.isDirectory && vendor.name.uppercased() != "BOOT" {
            for file in (try? fat.list("/EFI/\(vendor.name)")) ?? [] where !file.isDirectory && file.name.uppercased().hasSuffix(".EFI") {
                found.append("\\EFI\\\(vendor.name)\\\(file.name)")
                if found.count == 4 { return found }
            }
        }
        return found
    }
}

/// The image followed by zeros up to 2^63 bytes: how firmware sees a filesystem that claims more
/// than the image holds, as long as it never reads there.
private struct ZeroExtended: ByteSource {
    let base: any ByteSource
    init(_ base: any ByteSource) { self.base = base }
    var size: UInt64 { UInt64(Int64.max) }

    func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        guard offset < base.size else { return [UInt8](repeating: 0, count: count) }
        let available = Int(min(UInt64(count), base.size - offset))
        return try base.read(at: offset, count: available) + [UInt8](repeating: 0, count: count - available)
    }
}
