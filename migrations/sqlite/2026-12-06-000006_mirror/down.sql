DROP TABLE mirror_assets;
