"""Draw the curated corpus's writing specs: one row per entry to write, so diversity is designed, not hoped for.

Each row fixes what the writer cannot choose freely (relationship, dialogue acts, mood, length, number of speakers,
the regions the names come from); the writer still writes every word. Seeded: the same command gives the same rows.

    python tools/corpus_plan.py --out corpus/plan --rows 500
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

# slice -> (theme as the founding document names it, its subthemes)
SLICES: dict[str, tuple[str, list[str]]] = {
    "sains": (
        "Sains murni dan terapan",
        [
            "fisika",
            "kimia",
            "biologi",
            "astronomi",
            "ilmu bumi dan iklim",
            "matematika dan statistika",
            "kedokteran dan gizi",
            "teknik dan rekayasa",
            "ekologi dan lingkungan",
            "pertanian dan pangan",
        ],
    ),
    "filsafat": (
        "Filsafat dan pemikiran reflektif",
        [
            "etika sehari-hari",
            "pengetahuan dan kebenaran",
            "logika dan argumen",
            "identitas dan diri",
            "keadilan dan politik",
            "keindahan dan seni",
            "makna hidup dan kematian",
            "filsafat ilmu",
            "kearifan Nusantara dan Timur",
            "kebijaksanaan praktis dan stoikisme",
            "kebebasan dan tanggung jawab",
        ],
    ),
    "psikologi": (
        "Psikologi dan perilaku manusia",
        [
            "emosi",
            "kebiasaan dan disiplin",
            "motivasi",
            "memori dan belajar",
            "bias kognitif",
            "hubungan dan kelekatan",
            "stres dan kesehatan mental",
            "perkembangan anak dan remaja",
            "psikologi sosial",
            "tidur dan tubuh",
            "kepribadian",
            "pengambilan keputusan",
        ],
    ),
    "sosial": (
        "Ilmu sosial dan humaniora",
        [
            "sejarah Indonesia",
            "sejarah dunia",
            "ekonomi",
            "bahasa dan linguistik",
            "budaya daerah",
            "kota dan desa",
            "kewarganegaraan dan pemerintahan",
            "hukum sehari-hari",
            "sastra dan seni",
            "geografi dan kependudukan",
            "media dan jurnalisme",
            "pendidikan",
        ],
    ),
    "teknologi": (
        "Teknologi dan implikasi sosialnya",
        [
            "kecerdasan buatan",
            "media sosial",
            "privasi dan keamanan digital",
            "ponsel dan internet",
            "energi dan kendaraan listrik",
            "pekerjaan dan otomatisasi",
            "belanja daring dan dompet digital",
            "pemrograman dan komputer",
            "bioteknologi",
            "antariksa",
            "gim dan hiburan digital",
            "hoaks dan literasi digital",
        ],
    ),
    "harian-rumah": (
        "Kehidupan sehari-hari",
        [
            "keluarga",
            "pekerjaan dan kantor",
            "uang dan belanja",
            "kesehatan sehari-hari",
            "rumah dan tetangga",
            "pernikahan dan hubungan",
            "merawat orang tua",
            "pindah rumah dan kos",
            "usaha kecil",
        ],
    ),
    "harian-luar": (
        "Kehidupan sehari-hari",
        [
            "sekolah dan kuliah",
            "perjalanan dan mudik",
            "makanan dan memasak",
            "hobi",
            "olahraga",
            "hewan peliharaan",
            "film, musik, dan buku",
            "cuaca dan alam",
            "hari raya dan perayaan",
            "transportasi umum",
        ],
    ),
}

RELATIONSHIPS = [
    "teman",
    "sahabat lama",
    "kakak dan adik",
    "orang tua dan anak",
    "kakek atau nenek dan cucu",
    "suami dan istri",
    "sepasang kekasih",
    "guru dan murid",
    "dosen dan mahasiswa",
    "rekan kerja",
    "atasan dan bawahan",
    "tetangga",
    "dua orang asing yang baru kenal",
    "pedagang dan pembeli",
    "tenaga kesehatan dan pasien",
    "sepupu",
    "teman sekamar atau sekos",
    "mentor dan junior",
    "pelatih dan atlet",
    "paman atau bibi dan keponakan",
]
ACTS = [
    "menjelaskan",
    "berbeda pendapat",
    "menghibur",
    "bercanda",
    "merencanakan",
    "bercerita pengalaman",
    "meluruskan salah paham",
    "meminta saran",
    "membujuk",
    "membandingkan pilihan",
    "mengenang",
    "bertanya-tanya bersama",
]
MOODS = [
    "santai",
    "penasaran",
    "cemas",
    "kesal",
    "sedih",
    "antusias",
    "ragu-ragu",
    "lelah",
    "bangga",
    "geli",
    "serius",
    "nostalgia",
    "tergesa-gesa",
    "malu",
]
REGIONS = [
    "Jawa Tengah/Yogyakarta",
    "Jawa Timur",
    "Sunda",
    "Betawi",
    "Batak",
    "Minangkabau",
    "Aceh",
    "Melayu Riau/Deli",
    "Palembang",
    "Bugis/Makassar",
    "Minahasa/Manado",
    "Bali",
    "Sasak/Lombok",
    "NTT (Flores/Timor/Sumba)",
    "Maluku/Ambon",
    "Papua",
    "Dayak",
    "Banjar",
    "Madura",
    "Tionghoa-Indonesia",
    "Arab-Indonesia",
    "Toraja",
    "Gorontalo",
    "nama modern perkotaan",
    "Lampung",
    "Nias",
    "Bima/Sumbawa",
    "Ternate/Maluku Utara",
]
LENGTHS = [(8, 11, 0.3), (12, 16, 0.4), (17, 24, 0.3)]


def draw_rows(slice_name: str, rows: int, seed: int) -> list[dict]:
    theme, subthemes = SLICES[slice_name]
    rng = random.Random(f"{seed}:{slice_name}")
    out = []
    for index in range(1, rows + 1):
        low, high, _ = rng.choices(LENGTHS, weights=[w for *_, w in LENGTHS])[0]
        speakers = 3 if rng.random() < 0.15 else 2
        out.append(
            {
                "no": index,
                "tema": theme,
                "subtema": subthemes[(index - 1) % len(subthemes)],
                "hubungan": rng.choice(RELATIONSHIPS),
                "tindak_tutur": " + ".join(rng.sample(ACTS, 2)),
                "suasana": rng.choice(MOODS),
                "giliran": rng.randint(low, high),
                "pembicara": speakers,
                "asal_nama": ", ".join(rng.sample(REGIONS, speakers)),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("corpus/plan"))
    parser.add_argument("--rows", type=int, default=500, help="rows per slice")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for slice_name in SLICES:
        rows = draw_rows(slice_name, args.rows, args.seed)
        with open(args.out / f"specs-{slice_name}.tsv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
