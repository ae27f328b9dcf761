"""Maps the four code folders onto one import name (``shardnet.common`` is
``common/`` and so on); ``shardnet`` itself is a namespace package."""

from setuptools import find_packages, setup

FOLDERS = ("common", "dispatcher", "shards", "scripts")

package_dir = {f"shardnet.{folder}": folder for folder in FOLDERS}
packages = []
for folder in FOLDERS:
    packages.append(f"shardnet.{folder}")
    packages += [f"shardnet.{folder}.{sub}" for sub in find_packages(folder)]
    for sub in find_packages(folder):
        package_dir[f"shardnet.{folder}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(package_dir=package_dir, packages=packages)
