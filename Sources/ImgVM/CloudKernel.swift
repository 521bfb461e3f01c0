import Glibc
import ImgFormats
import ImgSystem
import Logging

/// Which kernel an isolated VM boots: Debian's cloud kernel (linux-image-cloud-amd64), the newest
/// installed; its release, whose modules go into the initramfs; and, for TCG, its uncompressed ELF
/// (PVH entry), extracted once into the cache, because the bzImage's decompressor costs about a
/// second there.
package enum CloudKernel {
    /// Debian's kernels for this, newest first: /boot/vmlinuz-*-cloud-amd64.
    static let pattern = (prefix: "vmlinuz-", suffix: "-cloud-amd64")
    /// Extracted kernels in the cache: vmlinux-RELEASE-KEY, KEY the kernel file's.
    static let uncompressedPrefix = "vmlinux-"

    /// The newest /boot/vmlinuz-*-cloud-amd64, by version.
    package static func newest() throws(IsolatedVM.Error) -> String {
        guard let names = try? listDirectory("/boot") else { throw .kernelMissing("/boot cannot be read") }
        let found = names.filter { $0.hasPrefix(pattern.prefix) && $0.hasSuffix(pattern.suffix) }
        guard let newest = found.max(by: { versionLess($0, $1) }) else {
            throw .kernelMissing("no /boot/\(pattern.prefix)*\(pattern.suffix)")
        }
        return "/boot/\(newest)"
    }

    /// Compares like `sort -V`: runs of digits as numbers, the rest as text.
    static func versionLess(_ a: String, _ b: String) -> Bool {
        func parts(_ s: String) -> [(Int?, String)] {
            var out: [(Int?, String)] = []
            var current = "", digits = false
            for c in s {
                if c.isASCII && c.isNumber != digits, !current.isEmpty {
                    out.append((digits ? Int(current) : nil, current)); current = ""
                }
                digits = c.isASCII && c.isNumber
                current.append(c)
            }
            if !current.isEmpty { out.append((digits ? Int(current) : nil, current)) }
            return out
        }
        let (pa, pb) = (parts(a), parts(b))
        for (x, y) in zip(pa, pb) {
            if let nx = x.0, let ny = y.0 { if nx != ny { return nx < ny } } else if x.1 != y.1 { return x.1 < y.1 }
        }
        return pa.count < pb.count
    }

    /// The release from the bzImage header, else from the file name (vmlinuz-RELEASE).
    /// Wraps open(2) and read(2).
    package static func release(of kernel: String) throws(IsolatedVM.Error) -> String {
        let file: FileHandle
        do { file = try FileHandle(path: kernel, flags: O_RDONLY) } catch {
            throw .kernelMissing("\(kernel) cannot be opened (\(String(cString: strerror(error.errno))))")
        }
        var head = [UInt8](repeating: 0, count: 65536)
        let n = (try? systemCall("read", on: kernel) { read(file.fd, &head, head.count) }) ?? -1
        if n > 0, let release = try? LinuxKernelImage.header(Array(head[..<n]), fileSize: Int.max).release { return release }
        let name = kernel.split(separator: "/").last.map(String.init) ?? kernel
        guard name.hasPrefix("vmlinuz-") else { throw .kernelMissing("\(kernel) has no release in its header or name") }
        return String(name.dropFirst("vmlinuz-".count))
    }

    /// The cached uncompressed ELF kernel for `kernel`, extracting it on first use; nil if the kernel
    /// cannot be booted that way (then the bzImage boots as it is).
    package static func uncompressed(_ kernel: String, release: String, cache: VMCache, logger: Logger) -> String? {
        guard let key = VMCache.fileKey(kernel) else { return nil }
        let path = cache.path("\(uncompressedPrefix)\(release)-\(key)")
        if accessible(path, R_OK) { return path }
        guard let bytes = try? readFile(kernel) else { return nil }
        let started = monotonicNow()
        do {
            let elf = try LinuxKernelImage.extractELF(bytes)
            removeStaleKernels(in: cache, release: release)
            guard cache.store(elf, at: path) else { return nil }
            logger.debug("extracted the uncompressed kernel", metadata: ["path": "\(path)", "seconds": "\(monotonicNow() - started)"])
            return path
        } catch {
            logger.debug("booting the compressed kernel", metadata: ["reason": "\(error.description)"])
            return nil
        }
    }

    /// Extracted kernels are about 50 MB: drop older extractions of `release` (the kernel file
    /// changed) and those of releases whose modules are gone (the package was removed).
    static func removeStaleKernels(in cache: VMCache, release: String) {
        cache.remove(prefix: uncompressedPrefix) { name in
            guard let dash = name.lastIndex(of: "-") else { return false }
            let itsRelease = String(name[name.index(name.startIndex, offsetBy: uncompressedPrefix.count)..<dash])
            return itsRelease == release || !accessible("/lib/modules/\(itsRelease)")
        }
    }
}
