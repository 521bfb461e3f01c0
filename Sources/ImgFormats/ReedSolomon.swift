/// GRUB's Reed-Solomon code: the redundancy grub-bios-setup appends to an embedded core.img, from
/// which lzma_decompress.img repairs damaged sectors before it decompresses the kernel.
///
/// The code, as GRUB 2.02 to 2.12 lay it out (grub-core/lib/reed_solomon.c; 2.00 used the roots
/// α^1...α^n instead, which Debian's 2.06 does not):
/// - GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11D) and generator α = 2.
/// - A systematic code whose generator polynomial is (X + 1)(X + α)...(X + α^(n-1)) for n check
///   bytes; a codeword is the data bytes, highest degree first, then the remainder of
///   data(X)·X^n divided by the generator.
/// - The data and the redundancy are cut into chunks of at most 200 sectors together, each chunk
///   taking its share of both in whole sectors, the last one the rest.
/// - Inside a chunk the bytes are interleaved by their offset within a 512-byte sector: column
///   `i` (0..<512) is one codeword made of the data bytes at i, i + 512, i + 1024, ... and its check
///   bytes go to the same offsets of the redundancy. A damaged sector so costs each codeword one
///   byte, which is what a code that corrects n/2 errors per codeword repairs best.
public enum ReedSolomon {
    /// The interleaving period: one codeword per byte offset within a sector.
    static let sectorSize = 512
    /// GRUB encodes at most this many bytes (data plus redundancy) as one chunk.
    static let maximumChunk = 200 * sectorSize

    /// The redundancy GRUB writes after `data`: `count` bytes, laid out as GRUB's decoder expects
    /// them right after the data. Nil when GRUB's chunking would never finish (more than 199
    /// redundancy bytes per data byte, so that a chunk gets no data; GRUB would loop forever).
    public static func grubRedundancy(for data: ArraySlice<UInt8>, count: Int) -> [UInt8]? {
        guard let plan = chunks(dataCount: data.count, redundancyCount: count) else { return nil }
        // Bytes GRUB never reaches (no data left, redundancy left over) stay zero, as in setup's buffer.
        var redundancy = [UInt8](repeating: 0, count: max(count, 0))
        var dividers: [Int: Divider] = [:]
        var dataStart = data.startIndex
        var redundancyStart = 0
        for chunk in plan {
            for column in 0..<min(sectorSize, chunk.data) {
                let dataBytes = rowCount(chunk.data, column: column)
                let checkCount = rowCount(chunk.redundancy, column: column)
                guard checkCount > 0 else { continue }
                let divider = dividers[checkCount] ?? Divider(generatorPolynomial(checkCount))
                dividers[checkCount] = divider
                var codeword = [UInt8](repeating: 0, count: dataBytes)
                for row in 0..<dataBytes { codeword[row] = data[dataStart + row * sectorSize + column] }
                let check = checkBytes(codeword, divider: divider)
                for row in 0..<checkCount { redundancy[redundancyStart + row * sectorSize + column] = check[row] }
            }
            dataStart += chunk.data
            redundancyStart += chunk.redundancy
        }
        return redundancy
    }

    // MARK: the layout

    /// One chunk: how many data bytes and how many redundancy bytes it encodes together.
    struct Chunk: Equatable {
        let data: Int
        let redundancy: Int
    }

    /// GRUB's cut of `dataCount` bytes and `redundancyCount` check bytes into chunks: while both
    /// together exceed `maximumChunk`, each gets its proportional share of 200 sectors, rounded
    /// down to whole sectors; what is left is the last chunk. Nil when a chunk would get no data.
    static func chunks(dataCount: Int, redundancyCount: Int) -> [Chunk]? {
        guard dataCount >= 0, redundancyCount > 0 else { return [] }
        var plan: [Chunk] = []
        var data = dataCount
        var redundancy = redundancyCount
        while data > 0 {
            let total = data + redundancy
            var chunk = Chunk(data: data, redundancy: redundancy)
            if total > maximumChunk {
                let sectors = maximumChunk / sectorSize
                chunk = Chunk(data: data * sectors / total * sectorSize, redundancy: redundancy * sectors / total * sectorSize)
            }
            guard chunk.data > 0 else { return nil }
            plan.append(chunk)
            data -= chunk.data
            redundancy -= chunk.redundancy
        }
        return plan
    }

    /// How many of `count` bytes lie at `column`, `column + 512`, ...: the rows of that column.
    static func rowCount(_ count: Int, column: Int) -> Int {
        (count + sectorSize - 1 - column) / sectorSize
    }

    // MARK: GF(2^8)

    /// α^k for k in 0..<510, so that a product of two logarithms needs no reduction modulo 255.
    static let exponentials: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 510)
        var value = 1
        for k in 0..<510 {
            table[k] = UInt8(value)
            value <<= 1
            if value & 0x100 != 0 { value ^= 0x11D }
        }
        return table
    }()

    /// log_α(x) for x in 1...255; entry 0 is unused (zero has no logarithm).
    static let logarithms: [Int] = {
        var table = [Int](repeating: 0, count: 256)
        for k in 0..<255 { table[Int(exponentials[k])] = k }
        return table
    }()

    static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        guard a != 0, b != 0 else { return 0 }
        return exponentials[logarithms[Int(a)] + logarithms[Int(b)]]
    }

    /// (X + 1)(X + α)...(X + α^(n-1)), coefficients highest degree first, so entry 0 is 1.
    static func generatorPolynomial(_ n: Int) -> [UInt8] {
        var polynomial: [UInt8] = [1]
        for k in 0..<n {
            let root = exponentials[k % 255]
            // Multiplying by (X + root): shift up one degree, add root times the old polynomial.
            var next = polynomial + [0]
            for (i, coefficient) in polynomial.enumerated() { next[i + 1] ^= multiply(root, coefficient) }
            polynomial = next
        }
        return polynomial
    }

    /// The remainder of data(X)·X^n by the monic `generator` of degree n: the codeword's check
    /// bytes.
    static func checkBytes(_ data: [UInt8], generator: [UInt8]) -> [UInt8] {
        checkBytes(data, divider: Divider(generator))
    }

    /// A generator's products with every byte, so that the division's inner loop is one lookup:
    /// it runs some three million times for a core.img, most of an offline install's CPU time
    /// under TCG (the isolated VM).
    struct Divider {
        /// The generator's degree: the number of check bytes.
        let n: Int
        /// Row f: generator coefficients 1...n times f.
        let products: [UInt8]

        init(_ generator: [UInt8]) {
            n = generator.count - 1
            var products = [UInt8](repeating: 0, count: 256 * n)
            for factor in 1..<256 {
                for k in 0..<n { products[factor * n + k] = multiply(generator[k + 1], UInt8(factor)) }
            }
            self.products = products
        }
    }

    /// `checkBytes(_:generator:)` with the generator's products made once. A shift register holds
    /// what the division has added to the next n positions so far.
    static func checkBytes(_ data: [UInt8], divider: Divider) -> [UInt8] {
        let n = divider.n
        var register = [UInt8](repeating: 0, count: n)
        register.withUnsafeMutableBufferPointer { register in
            divider.products.withUnsafeBufferPointer { products in
                for byte in data {
                    let row = Int(byte ^ register[0]) * n
                    for k in 0..<n - 1 { register[k] = register[k + 1] ^ products[row + k] }
                    register[n - 1] = products[row + n - 1]
                }
            }
        }
        return register
    }
}
