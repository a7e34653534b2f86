"""Tiny on-disk copies of the four datasets' layouts, quirks included (DATASETS.md section 8).

Every clip is written with PyAV: a face (a real photo from the shared data when given, else a
drawn one) on a grey background, a coloured square moving 1 px per frame whose colour encodes
the frame index, and a sine tone whose frequency differs per clip. Odd clips cover the
normalisation paths: 30 fps, 44.1 kHz stereo, non-square frames, no audio track.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np

SECONDS = 2.4
"""Clip length: above the core's 2 s voice-profile minimum."""


def make_frames(num: int, width: int, height: int, face: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
    """(num, height, width, 3) uint8 frames: a face in the middle and a moving square."""
    base = np.full((height, width, 3), 110, np.uint8)
    side = min(width, height) // 2
    y0, x0 = (height - side) // 2, (width - side) // 2
    if face is not None:
        from PIL import Image

        base[y0 : y0 + side, x0 : x0 + side] = np.asarray(Image.fromarray(face).resize((side, side)))
    else:
        yy, xx = np.mgrid[:height, :width]
        cy, cx = height / 2, width / 2
        base[((yy - cy) / (side * 0.6)) ** 2 + ((xx - cx) / (side * 0.45)) ** 2 < 1] = (224, 172, 140)
        for ex in (cx - side * 0.18, cx + side * 0.18):
            base[(yy - (cy - side * 0.1)) ** 2 + (xx - ex) ** 2 < (side * 0.05) ** 2] = (30, 30, 30)
        base[(abs(yy - (cy + side * 0.25)) < side * 0.04) & (abs(xx - cx) < side * 0.15)] = (150, 40, 40)
    frames = np.repeat(base[None], num, axis=0)
    for i in range(num):
        x = i % max(1, width - 8)
        frames[i, :8, x : x + 8] = ((i * 9 + seed * 40) % 256, (i * 5) % 256, 255 - (i * 7) % 256)
    return frames


def write_clip(path: Path, seconds: float = SECONDS, size: tuple[int, int] = (64, 64), fps: int = 25,
               sample_rate: int = 16000, channels: int = 1, audio: bool = True, freq: float = 220.0,
               face: Optional[np.ndarray] = None, seed: int = 0) -> Path:
    """Write an H.264 (+ AAC) mp4 at ``path``; ``size`` is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = make_frames(int(round(seconds * fps)), size[0], size[1], face, seed)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        astream = out.add_stream("aac", rate=sample_rate, layout="stereo" if channels == 2 else "mono") if audio else None
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        if astream is not None:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            planar = np.repeat(tone[None], channels, axis=0)  # (C, S)
            for i in range(0, planar.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i : i + 1024]), format="fltp",
                                                   layout=astream.layout.name)
                chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, i, Fraction(1, sample_rate)
                out.mux(astream.encode(chunk))
            out.mux(astream.encode())
    return path


def write_wav(path: Path, seconds: float = SECONDS, freq: float = 300.0, sample_rate: int = 16000) -> Path:
    """16 kHz mono PCM wav (the VoxCeleb1 release)."""
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return path


def _track(path: Path, ident: str, yt: str, box: tuple[float, float, float, float], frames: int = 60) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i:06d} \t{box[0]} \t{box[1]} \t{box[2]} \t{box[3]} \n" for i in range(frames))
    path.write_text(f"Identity  : \t{ident}\nReference : \t{yt}\nOffset \t: \t0\nFV Conf   : \t17.1\n"
                    f"ASD Conf  : \t6.2\n\nFRAME \tX \tY \tW \tH \n{rows}")


def build_voxceleb(root: Path, face: Optional[np.ndarray] = None) -> Path:
    """``voxceleb/{vox2,vox1}``: 3 Vox2 dev + 1 Vox2 test clips; 3 Vox1 wavs (2 with rebuilt video)."""
    vox2, vox1 = root / "vox2", root / "vox1"
    for n, (rel, ident, yt) in enumerate([("dev/mp4", "id00012", "21Uxsk56VDQ"), ("dev/mp4", "id00012", "21Uxsk56VDQ"),
                                          ("dev/mp4", "id00015", "0fvF7-8pCWg"), ("mp4", "id00017", "5MkXgwdrmJw")]):
        stem = f"{n % 2 + 1:05d}" if ident == "id00012" else "00001"
        write_clip(vox2 / rel / ident / yt / f"{stem}.mp4", size=(224, 224), face=face, freq=200 + 40 * n, seed=n)
        _track(vox2 / rel.replace("mp4", "txt") / ident / yt / f"{stem}.txt", ident, yt, (0.25, 0.25, 0.5, 0.5))
    (vox2 / "vox2_meta.csv").write_text("\ufeffVoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"
                                        "id00012 ,n000012 ,m ,dev \nid00015 ,n000015 ,f ,dev \nid00017 ,n000017 ,m ,test \n")
    (vox1 / "vox1_meta.csv").parent.mkdir(parents=True, exist_ok=True)
    (vox1 / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                                        "id10001\tA.J._Buckley\tm\tIreland\tdev\nid10002\tA.R._Rahman\tm\tIndia\tdev\n"
                                        "id10270\tSomeone\tm\tUSA\ttest\nid10003\tAaron_Tveit\tm\tNorway\tdev\n")
    for n, (ident, yt, video) in enumerate([("id10001", "1zcIwhmdeo4", True), ("id10002", "6WO410QOeuo", True),
                                            ("id10270", "5r0dWxy17C8", False)]):
        write_wav(vox1 / "wav" / ident / yt / "00001.wav", freq=330 + 30 * n)
        _track(vox1 / "txt" / ident / yt / "00001.txt", ident, yt, (16, 16, 32, 32))
        if video:
            write_clip(vox1 / "mp4" / ident / yt / "00001.mp4", face=face, audio=False, seed=10 + n)
    return root


FAKEAV_ROWS = [  # (source, t1, t2, method, cat, race, gender, file, folder-under-root)
    ("id00076", "-", "-", "real", "A", "African", "men", "00109.mp4", "RealVideo-RealAudio/African/men/id00076"),
    ("id00579", "-", "-", "real", "A", "Asian (East)", "women", "00010.mp4", "RealVideo-RealAudio/Asian (East)/women/id00579"),
    ("id00580", "-", "-", "real", "A", "Asian (East)", "women", "00109.mp4", "RealVideo-RealAudio/Asian (East)/women/id00580"),
    ("id00081", "-", "-", "real", "A", "African", "men", "00020.mp4", "RealVideo-RealAudio/African/men/id00081"),
    ("id00099", "-", "-", "real", "A", "African", "women", "00001.mp4", "RealVideo-RealAudio/African/women/id00099"),
    ("id00076", "-", "-", "rtvc", "B", "African", "men", "00109_fake.mp4", "RealVideo-FakeAudio/African/men/id00076"),
    ("id00076", "id00166", "-", "wav2lip", "C", "African", "men", "00109_id00166_wavtolip.mp4",
     "FakeVideo-RealAudio/African/men/id00076"),
    ("id00100", "id00398", "-", "wav2lip", "D", "Caucasian (American)", "women", "00028_id00398_wavtolip.mp4",
     "FakeVideo-FakeAudio/Caucasian (American)/women/id00100"),
]
TYPES = {"A": "RealVideo-RealAudio", "B": "RealVideo-FakeAudio", "C": "FakeVideo-RealAudio", "D": "FakeVideo-FakeAudio"}


def build_fakeavceleb(root: Path, face: Optional[np.ndarray] = None) -> Path:
    """``FakeAVCeleb_v1.2/FakeAVCeleb_v1.2/``: 7 files, one CSV row without file, one duplicated row, one 30 fps clip."""
    base = root / "FakeAVCeleb_v1.2" / "FakeAVCeleb_v1.2"
    lines = ["source,target1,target2,method,category,type,race,gender,path,"]
    for n, (src, t1, t2, method, cat, race, gender, name, folder) in enumerate(FAKEAV_ROWS):
        lines.append(f"{src},{t1},{t2},{method},{cat},{TYPES[cat]},{race},{gender},{name},FakeAVCeleb/{folder}")
        if src == "id00099":
            continue  # listed, not on disk
        write_clip(base / folder / name, face=face, freq=180 + 30 * n, seed=n, fps=30 if n == 1 else 25)
    lines.append(lines[1])  # the CSV repeats some rows
    (base / "meta_data.csv").write_text("\n".join(lines) + "\n")
    (base / "README.txt").write_text("FakeAVCeleb v1.2\n")
    (base / FAKEAV_ROWS[0][8] / "00109.txt").write_text("face track\n")
    return root


def build_hdtf(root: Path) -> Path:
    """``HDTF/``: annotations (WDA with a BOM), both naming schemes, a raw video, one clip without audio."""
    notes = root / "HDTF_dataset"
    notes.mkdir(parents=True, exist_ok=True)
    files = {
        "RD_video_url.txt": "Radio11 https://www.youtube.com/watch?v=aaaaaaaaaaa\nRadio12 https://youtu.be/bbbbbbbbbbb\n",
        "RD_resolution.txt": "Radio11.mp4 720\nRadio12.mp4 1080\n",
        "RD_annotion_time.txt": "Radio11.mp4 00:00-00:03 00:00-00:03\nRadio12.mp4 00:05-00:20\n",
        "RD_crop_wh.txt": "Radio11_0.mp4 50 60 30 60\n",
        "RD_crop_ratio.txt": "Radio11_0.mp4 1.1\n",
        "WDA_video_url.txt": "\ufeffAdamSchiff https://www.youtube.com/watch?v=ccccccccccc\n",
        "WDA_resolution.txt": "AdamSchiff.mp4 720\n",
        "WDA_annotion_time.txt": "\ufeffAdamSchiff.mp4 00:00-00:10\n",
        "WDA_crop_wh.txt": "AdamSchiff_0.mp4 0 96 0 96\n",
        "WRA_video_url.txt": "AdamKinzinger0 https://www.youtube.com/watch?v=ddddddddddd\n"
                             "AdamKinzinger1 https://www.youtube.com/watch?v=eeeeeeeeeee\n",
        "WRA_resolution.txt": "AdamKinzinger0.mp4 1080\nAdamKinzinger1.mp4 0\n",
        "WRA_annotion_time.txt": "AdamKinzinger0.mp4 00:00-00:08\nAdamKinzinger1.mp4 00:00-00:08\n",
        "WRA_crop_wh.txt": "AdamKinzinger0_0.mp4 0 96 0 96\n",
    }
    for name, text in files.items():
        (notes / name).write_text(text)
    clips = root / "clips"
    write_clip(clips / "RD_Radio11_001.mp4", size=(96, 96), fps=30, freq=250, seed=1)
    write_clip(clips / "WDA_AdamSchiff_000.mp4", size=(96, 96), fps=30, freq=260, seed=2, audio=False)
    write_clip(clips / "WRA_AdamKinzinger0_000.mp4", size=(96, 96), fps=30, freq=270, seed=3)
    write_clip(clips / "AdamKinzinger1_0.mp4", size=(96, 96), fps=30, freq=280, seed=4)  # official naming
    write_clip(clips / "Radio11_1.mp4", size=(96, 96), fps=30, freq=290, seed=5)  # duplicate of RD_Radio11_001
    write_clip(clips / "_videos_raw" / "RD_Radio11.mp4", seconds=3.0, size=(160, 120), fps=30, freq=300, seed=6)
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "test.txt").write_text("WRA_AdamKinzinger0_000\n")
    return root


APPEARANCE = ["Blurry", "Male", "Young", "Chubby", "Pale_Skin", "Rosy_Cheeks", "Oval_Face", "Receding_Hairline",
              "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Gray_Hair", "Brown_Hair", "Straight_Hair", "Wavy_Hair",
              "Long_Hair", "Arched_Eyebrows", "Bushy_Eyebrows", "Bags_Under_Eyes", "Eyeglasses", "Sunglasses",
              "Narrow_Eyes", "Big_Nose", "Pointy_Nose", "High_Cheekbones", "Big_Lips", "Double_Chin",
              "No_Beard", "5_o_Clock_Shadow", "Goatee", "Mustache", "Sideburns", "Heavy_Makeup", "Wearing_Earrings",
              "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Wearing_Mask"]
ACTIONS = ["blow", "chew", "close_eyes", "cough", "cry", "drink", "eat", "frown", "gaze", "glare", "head_wagging",
           "kiss", "laugh", "listen_to_music", "look_around", "make_a_face", "nod", "play_instrument", "read",
           "shake_head", "shout", "sigh", "sing", "sleep", "smile", "smoke", "sneer", "sneeze", "sniff", "talk",
           "turn", "weep", "whisper", "wink", "yawn"]


def _celebv_clip(ytb: str, start: float, end: float, talk: bool, emotion: dict) -> dict:
    action = [0] * len(ACTIONS)
    action[ACTIONS.index("talk")] = int(talk)
    return {"ytb_id": ytb, "duration": {"start_sec": start, "end_sec": end},
            "bbox": {"top": 0.2, "bottom": 0.7, "left": 0.3, "right": 0.7},
            "attributes": {"appearance": [1] + [0] * (len(APPEARANCE) - 1), "action": action, "emotion": emotion},
            "version": "v0.1"}


def build_celebvhq(root: Path) -> Path:
    """``CelebV-HQ/``: info JSON (4 talk clips + 1 not talking), processed 80² and 72², one raw 160x120 44.1 kHz stereo."""
    clips = {
        "M2Ohb0FAaJU_1": _celebv_clip("M2Ohb0FAaJU", 1.0, 3.5, True, {"sep_flag": False, "labels": "neutral"}),
        "_0tf2n3rlJU_0": _celebv_clip("_0tf2n3rlJU", 0.0, 2.4, True, {"sep_flag": True, "labels": [
            {"emotion": "happy", "start_sec": 0.0, "end_sec": 1.0}, {"emotion": "neutral", "start_sec": 1.0, "end_sec": 2.4}]}),
        "-abcDEF1234_2": _celebv_clip("-abcDEF1234", 0.0, 2.4, True, {"sep_flag": False, "labels": "happy"}),
        "zzNotHere00_0": _celebv_clip("zzNotHere00", 0.0, 5.0, True, {"sep_flag": False, "labels": "sad"}),
        "-abcDEF1234_3": _celebv_clip("-abcDEF1234", 3.0, 6.0, False, {"sep_flag": False, "labels": "neutral"}),
    }
    info = {"meta_info": {"appearance_mapping": APPEARANCE, "action_mapping": ACTIONS}, "clips": clips}
    root.mkdir(parents=True, exist_ok=True)
    (root / "celebvhq_info.json").write_text(json.dumps(info))
    down = root / "downloaded_celebvhq"
    write_clip(down / "raw" / "M2Ohb0FAaJU.mp4", seconds=4.0, size=(160, 120), fps=30, sample_rate=44100, channels=2,
               freq=310, seed=7)
    write_clip(down / "processed" / "_0tf2n3rlJU_0.mp4", size=(80, 80), fps=30, sample_rate=44100, freq=320, seed=8)
    write_clip(down / "processed" / "-abcDEF1234_2.mp4", size=(72, 72), fps=24, sample_rate=48000, freq=330, seed=9)
    (root / "language.csv").write_text("clip_key,language,prob,text\n_0tf2n3rlJU_0,de,0.97,hallo\n")
    return root


def fake_detect_face(image: np.ndarray, *args, **kwargs):
    """Stand-in for MTCNN on drawn faces: the centred half-size box and mean-face landmarks."""
    from datamodules.face import MEAN_LANDMARKS

    h, w = image.shape[:2]
    side = min(h, w) / 2
    box = np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2], np.float64)
    return box, box[:2] + MEAN_LANDMARKS * (box[2:] - box[:2])
