"""Tests of the dataset readers on tiny fixtures written in each release's exact on-disk layout."""
import logging
import os

import fixtures
import numpy as np
import pytest

from lnl_jax.data import readers
from lnl_jax.errors import ConfigError, DataError


def _names(records):
  return [os.path.basename(p) for p in records.paths]


def _rel(records, root):
  return [os.path.relpath(p, root) for p in records.paths]


# ---------------------------------------------------------------------------------------- RAF-DB

def test_rafdb_aligned_layout(tmp_path):
  root = fixtures.write_rafdb(str(tmp_path), [1, 2, 3, 4, 5, 6, 7, 7, 1], [5, 4])
  train = readers.read_rafdb(root, 'train')
  assert train.class_names == ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger',
                               'neutral')
  np.testing.assert_array_equal(train.labels, [0, 1, 2, 3, 4, 5, 6, 6, 0])
  assert _rel(train, root)[0] == os.path.join('Image', 'aligned', 'train_00001_aligned.jpg')
  assert all(os.path.isfile(p) for p in train.paths)
  assert train.images is None and train.subjects is None
  test = readers.read_rafdb(root, 'test')
  np.testing.assert_array_equal(test.labels, [4, 3])
  assert _names(test) == ['test_00001_aligned.jpg', 'test_00002_aligned.jpg']


def test_rafdb_falls_back_to_original_images(tmp_path, caplog):
  root = fixtures.write_rafdb(str(tmp_path), [3, 3], [1], layout='original')
  # The readers log through absl's logger, whose level a command parsed in-process earlier in the
  # session (absl's --verbosity) may have raised: set it here, not only the root logger's.
  with caplog.at_level(logging.INFO, logger='absl'):
    train = readers.read_rafdb(root, 'train')
  assert _rel(train, root) == [os.path.join('Image', 'original', 'train_00001.jpg'),
                               os.path.join('Image', 'original', 'train_00002.jpg')]
  assert 'Image/original' in caplog.text


@pytest.mark.parametrize('bad_line, message', [
    ('train_00003.jpg 8', 'out of range; expected 1..7'),
    ('train_00003.jpg happy', 'not an integer'),
    ('train_00003.jpg 3 1', '3 columns, expected 2'),
])
def test_rafdb_malformed_line_names_file_and_line(tmp_path, bad_line, message):
  # Two train + one test lines come first, then a blank line: the bad line is line 5.
  root = fixtures.write_rafdb(str(tmp_path), [1, 2], [3], extra_lines='\n' + bad_line + '\n')
  with pytest.raises(DataError, match=message) as e:
    readers.read_rafdb(root, 'train')
  assert 'list_patition_label.txt:5' in str(e.value)


def test_rafdb_label_of_missing_image(tmp_path):
  root = fixtures.write_rafdb(str(tmp_path), [1, 2, 3], [3], missing=('train_00002.jpg',))
  with pytest.raises(DataError, match=r'1 image\(s\) that do not exist: .*train_00002_aligned'):
    readers.read_rafdb(root, 'train')


def test_rafdb_missing_root_and_label_file(tmp_path):
  with pytest.raises(DataError, match='nowhere'):
    readers.read_rafdb(str(tmp_path / 'nowhere'), 'train')
  os.makedirs(tmp_path / 'Image' / 'aligned')
  with pytest.raises(DataError, match='EmoLabel/list_patition_label.txt'):
    readers.read_rafdb(str(tmp_path), 'train')
  with pytest.raises(ConfigError, match='train, test'):
    readers.read_rafdb(str(tmp_path), 'val')


# --------------------------------------------------------------------------------------- FER2013

FER_USAGES = ['Training', 'Training', 'PublicTest', 'PrivateTest', 'Training']


def test_fer2013_csv_splits_and_pixels(tmp_path):
  pixels = fixtures.write_fer2013_csv(str(tmp_path / 'fer2013.csv'), [0, 3, 6, 2, 5], FER_USAGES)
  train = readers.read_fer2013_csv(str(tmp_path), 'train')
  assert train.class_names == ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
  np.testing.assert_array_equal(train.labels, [0, 3, 5])
  assert train.paths is None and train.images.shape == (3, 48, 48, 3)
  assert train.images.dtype == np.uint8
  for channel in range(3):
    np.testing.assert_array_equal(train.images[..., channel], pixels[[0, 1, 4]])
  np.testing.assert_array_equal(readers.read_fer2013_csv(str(tmp_path), 'val').labels, [6])
  test = readers.read_fer2013_csv(str(tmp_path / 'fer2013.csv'), 'test')
  np.testing.assert_array_equal(test.labels, [2])
  np.testing.assert_array_equal(test.images[0, :, :, 1], pixels[3])


def test_fer2013_csv_bad_pixel_count_names_line(tmp_path):
  # Header is line 1, so row index 3 (PrivateTest) is line 5.
  fixtures.write_fer2013_csv(str(tmp_path / 'fer2013.csv'), [0, 3, 6, 2, 5], FER_USAGES,
                             bad_row=3)
  with pytest.raises(DataError, match=r'fer2013\.csv:5: 2303 pixel values, expected 2304'):
    readers.read_fer2013_csv(str(tmp_path), 'test')


def test_fer2013_csv_bad_emotion_and_header(tmp_path):
  fixtures.write_fer2013_csv(str(tmp_path / 'fer2013.csv'), [0, 7], ['Training'] * 2)
  with pytest.raises(DataError, match=r'fer2013\.csv:3: emotion 7 is out of range; expected 0..6'):
    readers.read_fer2013_csv(str(tmp_path), 'train')
  fixtures.write_text(str(tmp_path / 'x' / 'fer2013.csv'), 'label,pixels\n0,1 2\n')
  with pytest.raises(DataError, match='lacks the column.*emotion.*Usage'):
    readers.read_fer2013_csv(str(tmp_path / 'x'), 'train')


def test_fer2013_folders_and_autodetect(tmp_path):
  root = str(tmp_path)
  fixtures.write_class_folders(os.path.join(root, 'train'),
                               {'angry': 2, 'happy': 3, 'neutral': 1, 'fear': 0}, '.jpg')
  fixtures.write_class_folders(os.path.join(root, 'test'), {'sad': 2}, '.jpg')
  train = readers.read_fer2013(root, 'train')
  assert train.class_names == ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
  np.testing.assert_array_equal(train.labels, [0, 0, 3, 3, 3, 6])
  assert 'folders' in train.source
  np.testing.assert_array_equal(readers.read_fer2013(root, 'test').labels, [4, 4])
  fixtures.write_fer2013_csv(os.path.join(root, 'csv', 'fer2013.csv'), [1], ['Training'])
  assert readers.read_fer2013(os.path.join(root, 'csv'), 'train').images.shape == (1, 48, 48, 3)
  with pytest.raises(DataError, match='neither'):
    readers.read_fer2013(os.path.join(root, 'train', 'angry'), 'train')


def test_fer2013_folders_unknown_class(tmp_path):
  fixtures.write_class_folders(str(tmp_path / 'train'), {'happy': 1, 'contempt': 1}, '.jpg')
  with pytest.raises(DataError, match="contempt.*expected folders named angry, disgust, fear"):
    readers.read_fer2013_folders(str(tmp_path), 'train')


# ---------------------------------------------------------------------------------------- FERPlus

def test_ferplus_majority_soft_labels_and_drops(tmp_path):
  votes = [[8, 1, 0, 0, 0, 0, 0, 0, 1, 0],   # neutral
           [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped
           [1, 0, 0, 0, 0, 0, 0, 0, 5, 4],   # mostly unknown: dropped
           [0, 2, 0, 0, 0, 0, 0, 6, 2, 0],   # contempt
           [0, 0, 5, 5, 0, 0, 0, 0, 0, 0],   # tie: the earlier column, surprise
           [0, 0, 0, 0, 0, 0, 3, 0, 0, 0]]   # fear
  usages = ['Training'] * 4 + ['PublicTest', 'PrivateTest']
  pixels = fixtures.write_ferplus(str(tmp_path), votes, usages)
  train = readers.read_ferplus(str(tmp_path), 'train')
  assert train.class_names == ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust',
                               'fear', 'contempt')
  np.testing.assert_array_equal(train.labels, [0, 7])
  np.testing.assert_allclose(train.soft_labels, [[8 / 9, 1 / 9, 0, 0, 0, 0, 0, 0],
                                                 [0, 0.25, 0, 0, 0, 0, 0, 0.75]], rtol=1e-6)
  assert train.soft_labels.dtype == np.float32
  np.testing.assert_array_equal(train.images[..., 2], pixels[[0, 3]])
  np.testing.assert_array_equal(readers.read_ferplus(str(tmp_path), 'val').labels, [2])
  np.testing.assert_array_equal(readers.read_ferplus(str(tmp_path), 'test').labels, [6])


def test_ferplus_misaligned_files(tmp_path):
  fixtures.write_ferplus(str(tmp_path), [[1] + [0] * 9] * 3, ['Training'] * 3)
  fixtures.write_fer2013_csv(str(tmp_path / 'fer2013.csv'), [0, 0], ['Training'] * 2)
  with pytest.raises(DataError, match='align'):
    readers.read_ferplus(str(tmp_path), 'train')
  fixtures.write_fer2013_csv(str(tmp_path / 'csv_only' / 'fer2013.csv'), [0], ['Training'])
  with pytest.raises(DataError, match='FERPlus votes: expected the file .*fer2013new.csv'):
    readers.read_ferplus(str(tmp_path / 'csv_only'), 'train')


# -------------------------------------------------------------------------------------- AffectNet

AFFECTNET_ROWS = {
    'training': [('1/a.jpg', 10, 20, 30, 40, 0), ('1/b.jpg', 1, 2, 3, 4, 6),
                 ('2/c.jpg', 5, 6, 7, 8, 7), ('2/d.jpg', 0, 0, 5, 5, 9)],
    'validation': [('3/e.jpg', 2, 3, 9, 9, 3), ('3/f.jpg', 2, 3, 9, 9, 10)],
}


@pytest.mark.parametrize('header', [True, False])
def test_affectnet_csv_layout(tmp_path, header):
  root = fixtures.write_affectnet_csv(str(tmp_path), AFFECTNET_ROWS, header=header)
  train = readers.read_affectnet(root, 'train')
  assert train.class_names == ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger')
  np.testing.assert_array_equal(train.labels, [0, 6])
  np.testing.assert_array_equal(train.boxes, [[20, 10, 40, 30], [2, 1, 4, 3]])  # top,left,h,w
  assert _rel(train, root)[0] == os.path.join('Manually_Annotated_Images', '1', 'a.jpg')
  eight = readers.read_affectnet(root, 'train', num_classes=8)
  assert eight.class_names[-1] == 'contempt'
  np.testing.assert_array_equal(eight.labels, [0, 6, 7])
  test = readers.read_affectnet(root, 'test')
  np.testing.assert_array_equal(test.labels, [3])
  assert _names(test) == ['e.jpg']


def test_affectnet_bad_rows_and_options(tmp_path):
  rows = {'training': [('1/a.jpg', 1, 2, 3, 4, 0), ('1/b.jpg', 1, 2, 3, 4, 'Happy')]}
  root = fixtures.write_affectnet_csv(str(tmp_path), rows)
  with pytest.raises(DataError, match=r'training\.csv:3: expression .Happy. is not an integer'):
    readers.read_affectnet(root, 'train')
  with pytest.raises(ConfigError, match='num_classes=6'):
    readers.read_affectnet(root, 'train', num_classes=6)
  with pytest.raises(DataError, match='Manually_Annotated_file_lists/validation.csv'):
    readers.read_affectnet(root, 'test')


def test_affectnet_missing_image(tmp_path):
  root = fixtures.write_affectnet_csv(str(tmp_path), AFFECTNET_ROWS)
  os.remove(os.path.join(root, 'Manually_Annotated_Images', '1', 'b.jpg'))
  with pytest.raises(DataError, match=r'training\.csv names 1 image.*1/b\.jpg'):
    readers.read_affectnet(root, 'train')


def test_affectnet_npy_layout(tmp_path):
  root = fixtures.write_affectnet_npy(str(tmp_path), {'train_set': [0, 7, 3, 9],
                                                       'val_set': [1, 5]})
  train = readers.read_affectnet(root, 'train')
  np.testing.assert_array_equal(train.labels, [0, 3])
  assert _names(train) == ['0.jpg', '2.jpg'] and train.boxes is None
  np.testing.assert_array_equal(readers.read_affectnet(root, 'train', num_classes=8).labels,
                                [0, 7, 3])
  np.testing.assert_array_equal(readers.read_affectnet(root, 'test').labels, [1, 5])
  os.remove(os.path.join(root, 'val_set', 'annotations', '1_exp.npy'))
  with pytest.raises(DataError, match='1.jpg has no annotation .*1_exp.npy'):
    readers.read_affectnet(root, 'test')
  with pytest.raises(DataError, match='found neither'):
    readers.read_affectnet(os.path.join(root, 'train_set'), 'train')


# ------------------------------------------------------------------------------------------- SFEW

def test_sfew(tmp_path):
  root = fixtures.write_sfew(str(tmp_path), {'Angry': 2, 'Happy': 1, 'Surprise': 2},
                             {'Sad': 1, 'Neutral': 2})
  train = readers.read_sfew(root, 'train')
  assert train.class_names == ('Angry', 'Disgust', 'Fear', 'Happy', 'Neutral', 'Sad', 'Surprise')
  np.testing.assert_array_equal(train.labels, [0, 0, 3, 6, 6])
  test = readers.read_sfew(root, 'test')
  np.testing.assert_array_equal(test.labels, [4, 4, 5])
  assert all(os.path.join('Val', 'Val_Aligned_Faces') in p for p in test.paths)


def test_sfew_unknown_and_empty_folders(tmp_path, caplog):
  root = fixtures.write_sfew(str(tmp_path), {'Angry': 1, 'Fear': 0}, {'Contempt': 1})
  with caplog.at_level(logging.WARNING):
    np.testing.assert_array_equal(readers.read_sfew(root, 'train').labels, [0])
  assert 'Fear' in caplog.text and 'no images' in caplog.text
  with pytest.raises(DataError, match='Contempt.*expected folders named Angry, Disgust, Fear, '
                     'Happy, Neutral, Sad, Surprise'):
    readers.read_sfew(root, 'val')


# -------------------------------------------------------------------------------------------- CK+

CK_SEQUENCES = [('S005', '001', 4, 3), ('S005', '002', 3, None), ('S010', '001', 5, 2),
                ('S010', '002', 3, 7), ('S011', '004', 6, 5)]


def test_ckplus_peak_and_neutral(tmp_path):
  root = fixtures.write_ckplus(str(tmp_path), CK_SEQUENCES)
  records = readers.read_ckplus(root)
  assert records.class_names == ('neutral', 'anger', 'disgust', 'fear', 'happy', 'sadness',
                                 'surprise')
  assert _names(records) == ['S005_001_00000001.png', 'S005_001_00000004.png',
                             'S010_002_00000001.png', 'S010_002_00000003.png',
                             'S011_004_00000001.png', 'S011_004_00000006.png']
  np.testing.assert_array_equal(records.labels, [0, 2, 0, 6, 0, 4])
  np.testing.assert_array_equal(records.subjects, ['S005', 'S005', 'S010', 'S010', 'S011', 'S011'])
  with_contempt = readers.read_ckplus(root, include_contempt=True)
  assert with_contempt.num_classes == 8 and with_contempt.class_names[2] == 'contempt'
  assert len(with_contempt) == 8
  assert 'S010_001_00000005.png' in _names(with_contempt)
  assert with_contempt.labels[_names(with_contempt).index('S010_001_00000005.png')] == 2


def test_ckplus_last3(tmp_path):
  root = fixtures.write_ckplus(str(tmp_path), CK_SEQUENCES)
  records = readers.read_ckplus(root, frames='last3')
  assert records.class_names == ('anger', 'disgust', 'fear', 'happy', 'sadness', 'surprise')
  assert _names(records)[:3] == ['S005_001_00000002.png', 'S005_001_00000003.png',
                                 'S005_001_00000004.png']
  np.testing.assert_array_equal(records.labels, [1, 1, 1, 5, 5, 5, 3, 3, 3])
  with pytest.raises(ConfigError, match="frames='first'"):
    readers.read_ckplus(root, frames='first')


@pytest.mark.parametrize('text, message', [
    ('abc\n', "'abc' is not a number"),
    ('   9.0000000e+00\n', 'emotion code 9 is out of range; expected 1..7'),
    ('   0.0000000e+00\n', 'emotion code 0 is out of range'),
    ('   3.5000000e+00\n', 'not a whole number; expected an emotion code 1..7'),
])
def test_ckplus_malformed_emotion_file(tmp_path, text, message):
  root = fixtures.write_ckplus(str(tmp_path), CK_SEQUENCES, {('S005', '001'): text})
  with pytest.raises(DataError, match=message) as e:
    readers.read_ckplus(root)
  assert 'S005_001_00000004_emotion.txt:1' in str(e.value)


def test_ckplus_missing_peak_frame(tmp_path):
  root = fixtures.write_ckplus(str(tmp_path), CK_SEQUENCES)
  os.remove(os.path.join(root, 'cohn-kanade-images', 'S010', '002', 'S010_002_00000003.png'))
  with pytest.raises(DataError, match='S010_002_00000003.png, which does not exist'):
    readers.read_ckplus(root)


def test_ckplus48_folders(tmp_path):
  root = fixtures.write_ckplus48(str(tmp_path), {
      'anger': ['S010_004_00000017.png', 'S010_004_00000018.png'],
      'happy': ['S011_001_00000010.png'], 'contempt': ['S012_001_00000005.png'],
      'surprise': ['S005_001_00000011.png']})
  records = readers.read_ckplus(root)
  assert records.class_names == ('anger', 'happy', 'surprise')
  np.testing.assert_array_equal(records.labels, [0, 0, 1, 2])
  np.testing.assert_array_equal(records.subjects, ['S010', 'S010', 'S011', 'S005'])
  with_contempt = readers.read_ckplus(root, include_contempt=True)
  assert with_contempt.class_names == ('anger', 'contempt', 'happy', 'surprise')
  np.testing.assert_array_equal(with_contempt.labels, [0, 0, 1, 2, 3])
  fixtures.write_ckplus48(root, {'joy': ['S013_001_00000001.png']})
  with pytest.raises(DataError, match='joy.*expected folders named neutral, anger, contempt'):
    readers.read_ckplus(root)


def test_ckplus48_name_without_subject(tmp_path):
  root = fixtures.write_ckplus48(str(tmp_path), {'anger': ['face1.png', 'S010_004_00000017.png']})
  with pytest.raises(DataError, match='1 file name.*subject prefix.*face1.png'):
    readers.read_ckplus(root)


# ------------------------------------------------------------------------------------------ JAFFE

JAFFE_NAMES = ['KA.AN1.39.tiff', 'KA.HA2.30.tiff', 'KL.NE1.155.tiff', 'YM.SU3.60.tiff',
               'NA.DI1.214.tiff', 'TM.FE2.190.tiff', 'UY.SA1.139.tiff']


def test_jaffe(tmp_path):
  root = fixtures.write_jaffe(str(tmp_path / 'jaffe'), JAFFE_NAMES)
  records = readers.read_jaffe(str(tmp_path))  # finds the jaffe/ folder
  assert records.class_names == ('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness',
                                 'surprise')
  assert _names(records) == sorted(JAFFE_NAMES)
  np.testing.assert_array_equal(records.labels, [0, 3, 4, 1, 2, 5, 6])
  np.testing.assert_array_equal(records.subjects, ['KA', 'KA', 'KL', 'NA', 'TM', 'UY', 'YM'])
  assert len(readers.read_jaffe(root)) == 7
  fixtures.write_jaffe(root, ['KA.XX1.1.tiff'])
  with pytest.raises(DataError, match='1 file name.*AN, DI, FE, HA, NE, SA, SU: KA.XX1.1.tiff'):
    readers.read_jaffe(root)


# ---------------------------------------------------------------------------- image folder, MMI

def test_image_folder_extensions_and_hidden_files(tmp_path):
  root = str(tmp_path)
  for ext in ('.JPG', '.jpeg', '.png', '.Bmp', '.TIF', '.tiff', '.gif', '.webp'):
    fixtures.write_image(os.path.join(root, 'b_class', 'x' + ext), 8)
  fixtures.write_image(os.path.join(root, 'b_class', '.hidden.png'), 8)
  fixtures.write_text(os.path.join(root, 'b_class', 'notes.txt'), 'not an image')
  fixtures.write_class_folders(root, {'a_class': 2})
  records = readers.read_image_folder(root)
  assert records.class_names == ('a_class', 'b_class')
  np.testing.assert_array_equal(np.bincount(records.labels), [2, 8])
  assert not any(n.startswith('.') or n.endswith('.txt') for n in _names(records))
  fixed = readers.read_image_folder(root, class_names=('B_CLASS', 'A_CLASS', 'c_class'))
  assert fixed.class_names == ('B_CLASS', 'A_CLASS', 'c_class')
  np.testing.assert_array_equal(np.bincount(fixed.labels), [8, 2])


def test_image_folder_subjects_and_non_utf8_names(tmp_path):
  root = str(tmp_path)
  fixtures.write_class_folders(root, {'happy': 2}, prefix='S001')
  fixtures.write_class_folders(root, {'sad': 1}, prefix='S002')
  odd = os.path.join(os.fsencode(root), b'sad', b'S003_caf\xe9.png')  # Latin-1, not UTF-8
  fixtures.write_image(odd, 8)
  records = readers.read_image_folder(root, subject_pattern=r'^(S\d+)_')
  np.testing.assert_array_equal(records.subjects, ['S001', 'S001', 'S002', 'S003'])
  assert os.fsencode(records.paths[3]) == odd and os.path.isfile(records.paths[3])
  with pytest.raises(DataError, match=r'S003_caf\\xe9\.png'):
    readers.read_image_folder(root, subject_pattern=r'^S00[12]')


def test_image_folder_empty(tmp_path, caplog):
  fixtures.write_class_folders(str(tmp_path), {'a': 0, 'b': 0})
  with pytest.raises(DataError, match='no images'):
    readers.read_image_folder(str(tmp_path))
  with pytest.raises(DataError, match='nothing_here'):
    readers.read_image_folder(str(tmp_path / 'nothing_here'))


def test_mmi_and_registry(tmp_path):
  root = str(tmp_path)
  fixtures.write_class_folders(os.path.join(root, 'train'), {'anger': 2, 'neutral': 1})
  mmi = readers.read('mmi', os.path.join(root, 'train'), 'all')
  assert mmi.class_names == ('anger', 'neutral') and 'MMI' in mmi.source
  folder = readers.read('folder', root, 'train', subject_pattern='img_(...)')
  np.testing.assert_array_equal(folder.labels, [0, 0, 1])
  np.testing.assert_array_equal(folder.subjects, ['000', '001', '000'])
  assert set(readers.READERS) == {'rafdb', 'fer2013', 'ferplus', 'affectnet', 'sfew', 'ckplus',
                                  'jaffe', 'mmi', 'folder'}
  rafdb = fixtures.write_rafdb(os.path.join(root, 'raf'), [2, 1], [1])
  np.testing.assert_array_equal(readers.read('rafdb', rafdb, 'train').labels, [1, 0])
  with pytest.raises(ConfigError, match="unknown dataset 'raf'.*rafdb, fer2013, ferplus"):
    readers.read('raf', rafdb, 'train')
  with pytest.raises(ConfigError, match="split='all'"):
    readers.read('ckplus', root, 'train')
  with pytest.raises(ConfigError, match="no split 'val'.*train, test"):
    readers.read('rafdb', rafdb, 'val')
  with pytest.raises(ConfigError, match='no option.*num_classes.*its options: none'):
    readers.read('rafdb', rafdb, 'train', num_classes=7)


def test_fer2013_folders_spelled_otherwise_keep_fer2013s_order(tmp_path):
  """Exports name FER2013's folders in other spellings (anger, disgusted, fearful, happiness,
  sadness, surprised): each still maps to its FER2013 label 0..6 = angry, disgust, fear, happy,
  sad, surprise, neutral."""
  counts = {'anger': 1, 'disgusted': 2, 'fearful': 3, 'happiness': 4, 'sadness': 5,
            'surprised': 6, 'Neutral': 7}
  fixtures.write_class_folders(str(tmp_path / 'train'), counts, '.jpg')
  train = readers.read_fer2013(str(tmp_path), 'train')
  assert train.class_names == ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
  np.testing.assert_array_equal(np.bincount(train.labels, minlength=7), [1, 2, 3, 4, 5, 6, 7])


def test_ckplus48_folders_spelled_otherwise_keep_ckplus_classes(tmp_path):
  """CK+48 exports spell some class folders otherwise (angry, disgusted, fearful, happiness, sad,
  surprised): each is its CK+ class, in CK+'s order (neutral, anger, contempt, disgust, fear,
  happy, sadness, surprise; contempt left out)."""
  files = {'angry': 1, 'disgusted': 2, 'fearful': 3, 'happiness': 4, 'sad': 5, 'surprised': 6}
  root = fixtures.write_ckplus48(str(tmp_path), {
      name: [f'S{100 + 10 * i + k:03d}_001_{k + 1:08d}.png' for k in range(n)]
      for i, (name, n) in enumerate(files.items())})
  records = readers.read_ckplus(root)
  assert records.class_names == ('anger', 'disgust', 'fear', 'happy', 'sadness', 'surprise')
  np.testing.assert_array_equal(np.bincount(records.labels, minlength=6), [1, 2, 3, 4, 5, 6])


def test_rafdb_prefers_the_aligned_faces_when_both_image_folders_exist(tmp_path):
  """The basic release ships Image/aligned/ (the aligned 100×100 faces) next to Image/original/:
  with both present the reader lists the aligned faces, `<stem>_aligned.jpg`, as its docstring and
  the README's `Image/aligned/ (or Image/original/)` say."""
  root = fixtures.write_rafdb(str(tmp_path), [4, 2], [6], layout='original')
  fixtures.write_rafdb(root, [4, 2], [6], layout='aligned')
  train = readers.read_rafdb(root, 'train')
  assert _rel(train, root) == [os.path.join('Image', 'aligned', 'train_00001_aligned.jpg'),
                               os.path.join('Image', 'aligned', 'train_00002_aligned.jpg')]
  np.testing.assert_array_equal(train.labels, [3, 1])


def test_ferplus_drops_a_face_without_votes(tmp_path):
  """A fer2013new.csv row whose ten vote columns are all 0 has no expression vote: it is dropped
  (the reader's docstring), not kept as a neutral face with a 0/0 vote distribution. The row after
  it, 3 surprise votes, is a surprise face of distribution 1 on surprise."""
  votes = [[0] * 10, [0, 0, 3, 0, 0, 0, 0, 0, 0, 0]]
  pixels = fixtures.write_ferplus(str(tmp_path), votes, ['Training'] * 2)
  train = readers.read_ferplus(str(tmp_path), 'train')
  np.testing.assert_array_equal(train.labels, [2])
  np.testing.assert_array_equal(train.soft_labels, [[0, 0, 1, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(train.images[..., 0], pixels[[1]])


def test_ferplus_usage_columns_that_disagree_are_refused(tmp_path):
  """fer2013new.csv's rows match fer2013.csv's by position, so a row whose Usage differs from the
  same row of fer2013.csv means the files are not aligned (a re-sorted or filtered copy): a
  DataError names the line, instead of faces paired with another face's votes."""
  fixtures.write_ferplus(str(tmp_path), [[1] + [0] * 9] * 3, ['Training', 'PublicTest', 'Training'])
  fixtures.write_fer2013_csv(str(tmp_path / 'fer2013.csv'), [0] * 3,
                             ['Training', 'Training', 'PublicTest'])
  with pytest.raises(DataError, match=r'fer2013new\.csv:3: Usage .PublicTest. disagrees'):
    readers.read_ferplus(str(tmp_path), 'train')


def test_fer2013_reads_the_csv_when_class_folders_sit_beside_it(tmp_path):
  """A FER2013 folder may hold Kaggle's fer2013.csv and an image export (train/<class>/) side by
  side: the reader takes the CSV (its docstring: the CSV when present, else class folders), so
  the split is the CSV's Usage rows with their pixels in memory."""
  fixtures.write_fer2013_csv(str(tmp_path / 'fer2013.csv'), [4, 1, 2], ['Training'] * 3)
  fixtures.write_class_folders(str(tmp_path / 'train'), {'happy': 2}, '.jpg')
  train = readers.read_fer2013(str(tmp_path), 'train')
  np.testing.assert_array_equal(train.labels, [4, 1, 2])
  assert train.paths is None and train.images.shape == (3, 48, 48, 3)


def test_ckplus_peak_frames_only(tmp_path):
  """frames='peak': the labelled (last) frame of each labelled sequence and nothing else; no first
  frame is added as a neutral face (that is 'peak_and_neutral'), and there is no neutral class.
  CK_SEQUENCES' labelled sequences without contempt: S005/001 (code 3, disgust, 4 frames),
  S010/002 (7, surprise, 3), S011/004 (5, happy, 6)."""
  root = fixtures.write_ckplus(str(tmp_path), CK_SEQUENCES)
  records = readers.read_ckplus(root, frames='peak')
  assert _names(records) == ['S005_001_00000004.png', 'S010_002_00000003.png',
                             'S011_004_00000006.png']
  # No neutral face, so no neutral class: a head for it would learn a class never shown.
  assert records.class_names == ('anger', 'disgust', 'fear', 'happy', 'sadness', 'surprise')
  assert [records.class_names[l] for l in records.labels] == ['disgust', 'surprise', 'happy']
  np.testing.assert_array_equal(records.subjects, ['S005', 'S010', 'S011'])


def test_registry_reads_ferplus_votes(tmp_path):
  """`readers.read('ferplus', ...)`, what configs/ferplus.py loads, gives FERPlus's majority
  labels and vote distributions over its 8 classes, not fer2013.csv's own `emotion` column (all 0,
  angry, in this fixture)."""
  votes = [[0, 7, 0, 0, 0, 0, 0, 0, 3, 0], [0, 0, 0, 0, 0, 1, 4, 0, 0, 0]]
  fixtures.write_ferplus(str(tmp_path), votes, ['PrivateTest'] * 2)
  test = readers.read('ferplus', str(tmp_path), 'test')
  assert test.class_names == ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust',
                              'fear', 'contempt')
  np.testing.assert_array_equal(test.labels, [1, 6])
  np.testing.assert_allclose(test.soft_labels, [[0, 1, 0, 0, 0, 0, 0, 0],
                                                [0, 0, 0, 0, 0, 0.2, 0.8, 0]], rtol=1e-6)


def test_fer2013_csv_pixel_above_255_names_the_line(tmp_path):
  """Pixels are 8-bit grey, 0..255: a row holding 256 is a DataError naming its line, rather than
  a value that wraps round to 0 in uint8."""
  pixels = ' '.join(['7'] * (48 * 48 - 1) + ['256'])
  fixtures.write_text(str(tmp_path / 'fer2013.csv'),
                      f'emotion,pixels,Usage\n3,{" ".join(["7"] * 48 * 48)},Training\n'
                      f'3,{pixels},Training\n')
  with pytest.raises(DataError, match=r'fer2013\.csv:3: pixel values outside 0\.\.255'):
    readers.read_fer2013_csv(str(tmp_path), 'train')
